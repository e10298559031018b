/* svmctl internals. */
#ifndef SVMCTL_H
#define SVMCTL_H

#include <stdbool.h>
#include <stddef.h>

enum { SVMCTL_MAX_OPTS = 64 };

/* "SIZE[:PROVISIONING]" (SIZE: bytes, or with K/M/G/T = powers of 1024) -> "BYTES:PROV" for
 * the agent. 0, or -EINVAL with a message in err. */
int svmctl_disk_spec(const char *spec, char *out, size_t len, char *err, size_t errlen);

/* precheck.c: svmctl precheck */
int svmctl_precheck(const char *state, int argc, char **argv);

/* hostmove.c: migrate --host, migrate --cancel, status; tls init */
int svmctl_migrate(const char *state, int argc, char **argv);
int svmctl_status(const char *state, int argc, char **argv);
extern const char svmctl_tls_init_help[];
int svmctl_tls_init(const char *dir, const char *host, const char *ca, const char *days,
                    bool json);

#endif
