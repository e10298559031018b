/* svmctl internals. */
#ifndef SVMCTL_H
#define SVMCTL_H

#include <stddef.h>

enum { SVMCTL_MAX_OPTS = 64 };

/* "SIZE[:PROVISIONING]" (SIZE: bytes, or with K/M/G/T = powers of 1024) -> "BYTES:PROV" for
 * the agent. 0, or -EINVAL with a message in err. */
int svmctl_disk_spec(const char *spec, char *out, size_t len, char *err, size_t errlen);

/* migrate.c: `svmctl migrate ...` and `svmctl status ...` (argv after the command word);
 * the exit status. */
int svmctl_migrate(const char *state, int argc, char **argv);
int svmctl_status(const char *state, int argc, char **argv);

#endif
