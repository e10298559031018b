/* svmctl internals. */
#ifndef SVMCTL_H
#define SVMCTL_H

#include <stdbool.h>
#include <stddef.h>

/* Options of one command: room for a VM's 64 --disk (SVM_DESC_MAX_DISKS) and the others
 * beside them; svmd says "at most 64 disks" past that. */
enum { SVMCTL_MAX_OPTS = 80 };

/* "SIZE[:PROVISIONING]" (SIZE: bytes, or with K/M/G/T = powers of 1024) -> "BYTES:PROV" for
 * the agent. 0, or -EINVAL with a message in err. */
/* query.c: cbt-query with the request's arguments (keys/vals have room for 3 more), every page
 * printed as one answer; 0 or 1. */
int svmctl_cbt_query(const char *state, bool json, size_t nargs, const char **keys,
                     const char **vals);

int svmctl_disk_spec(const char *spec, char *out, size_t len, char *err, size_t errlen);

/* precheck.c: svmctl precheck (argv[0] is "precheck") */
int svmctl_precheck(const char *state, int argc, char **argv);

/* migrate.c: `svmctl migrate ...` and `svmctl status ...` (argv after the command word);
 * the exit status. */
int svmctl_migrate(const char *state, int argc, char **argv);
int svmctl_status(const char *state, int argc, char **argv);
/* hostmove.c: migrate --host (called by svmctl_migrate, same arguments); tls init */
int svmctl_migrate_host(const char *state, int argc, char **argv);
extern const char svmctl_tls_init_help[];
int svmctl_tls_init(const char *dir, const char *host, const char *ca, const char *days,
                    bool json);

#endif
