/* Size parsing and formatting (see size.h). Parsing is done by hand rather than with strtod so
 * that large exact values (16 EiB - 1) do not lose precision. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <svmotion/cli.h>

static int shift_for(const char *suffix, unsigned *shift)
{
  static const char units[] = "KMGTPE";
  const char *u;

  if (*suffix == '\0' || strcasecmp(suffix, "b") == 0) {
    *shift = 0;
    return 0;
  }
  u = strchr(units, toupper((unsigned char)suffix[0]));
  if (u == NULL)
    return -EINVAL;
  if (suffix[1] != '\0' && strcasecmp(suffix + 1, "b") != 0 && strcasecmp(suffix + 1, "ib") != 0)
    return -EINVAL;
  *shift = 10 * (unsigned)(u - units + 1);
  return 0;
}

int svm_size_parse(const char *s, uint64_t *out)
{
  uint64_t whole = 0, frac_num = 0, frac_den = 1;
  unsigned shift;
  const char *p = s;

  if (s == NULL || !isdigit((unsigned char)*p))
    return -EINVAL;
  for (; isdigit((unsigned char)*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (whole > (UINT64_MAX - d) / 10)
      return -ERANGE;
    whole = whole * 10 + d;
  }
  if (*p == '.') {
    p++;
    if (!isdigit((unsigned char)*p))
      return -EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
      if (frac_den <= UINT64_MAX / 100) {    /* extra digits past ~18 do not matter */
        frac_num = frac_num * 10 + (uint64_t)(*p - '0');
        frac_den *= 10;
      }
    }
  }
  if (shift_for(p, &shift) < 0)
    return -EINVAL;
  if (shift > 0 && whole > (UINT64_MAX >> shift))
    return -ERANGE;
  uint64_t v = whole << shift;
  if (frac_num > 0) {
    /* fraction * 2^shift must be a whole number of bytes */
    unsigned __int128 f = ((unsigned __int128)frac_num << shift);
    if (f % frac_den != 0)
      return -EINVAL;
    uint64_t add = (uint64_t)(f / frac_den);
    if (v > UINT64_MAX - add)
      return -ERANGE;
    v += add;
  }
  *out = v;
  return 0;
}

char *svm_size_format(uint64_t n, char *buf, size_t len)
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = (double)n;
  int i = 0;

  while (v >= 1024 && i < 6) {
    v /= 1024;
    i++;
  }
  if (i == 0)
    snprintf(buf, len, "%" PRIu64 " B", n);
  else
    snprintf(buf, len, "%.1f %s", v, units[i]);
  return buf;
}
