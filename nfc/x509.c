/* Test credentials in the QEMU/libvirt x509 layout (svmctl tls init), made with OpenSSL's
 * EVP and X509 APIs: EC P-256 keys, SHA-256 signatures, v3 extensions that mark the CA, the
 * server and the client for what they are. No certificate is parsed or encoded by hand.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/error.h"
#include "nfc/tls.h"

enum { DAY = 24 * 3600 };

static int ossl_error(const char *what)
{
  char buf[256] = "error";
  unsigned long e = ERR_get_error();

  if (e)
    ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return svm_error(EPROTO, "tls init: %s: %s", what, buf);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
  X509V3_CTX ctx;
  X509_EXTENSION *ext;
  int ok;

  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ext)
    return ossl_error(value);
  ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? 0 : ossl_error("X509_add_ext");
}

/* A certificate for key, CN=cn, signed by issuer_key (issuer NULL: self-signed), valid for
 * days (negative: expired -days ago). ext: NULL-terminated nid/value pairs. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       int days, const int *nids, const char *const *values)
{
  X509 *cert = X509_new();
  unsigned char serial[8];
  BIGNUM *bn = NULL;
  X509_NAME *name;
  size_t i;

  if (!cert)
    return NULL;
  if (RAND_bytes(serial, sizeof serial) != 1)
    goto fail;
  serial[0] &= 0x7f;            /* positive */
  bn = BN_bin2bn(serial, sizeof serial, NULL);
  if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)))
    goto fail;
  if (!X509_set_version(cert, 2))
    goto fail;
  if (days >= 0) {
    /* An hour of slack for clocks that disagree a little. */
    if (!X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * DAY))
      goto fail;
  } else if (!X509_gmtime_adj(X509_getm_notBefore(cert), ((long)days - 1) * DAY) ||
             !X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * DAY)) {
    goto fail;
  }
  name = X509_get_subject_name(cert);
  if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"svmotion",
                                  -1, -1, 0) ||
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                  0))
    goto fail;
  if (!X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name) ||
      !X509_set_pubkey(cert, key))
    goto fail;
  for (i = 0; nids[i]; i++)
    if (add_ext(cert, issuer ? issuer : cert, nids[i], values[i]) < 0)
      goto fail_quiet;
  if (!X509_sign(cert, issuer_key, EVP_sha256()))
    goto fail;
  BN_free(bn);
  return cert;

fail:
  ossl_error(cn);
fail_quiet:
  BN_free(bn);
  X509_free(cert);
  return NULL;
}

/* Write a PEM object to dir/name with mode, through a temporary file and rename, so a reader
 * never sees half a key and the mode is right from the first byte. */
static int write_pem(const char *dir, const char *name, mode_t mode, X509 *cert, EVP_PKEY *key)
{
  char path[PATH_MAX], tmp[PATH_MAX];
  FILE *f;
  int fd, ok;

  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path ||
      (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= sizeof tmp)
    return svm_error(ENAMETOOLONG, "tls init: %s/%s: path too long", dir, name);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0)
    return svm_error(errno, "tls init: %s: %s", tmp, strerror(errno));
  if (fchmod(fd, mode) < 0 || !(f = fdopen(fd, "w"))) {
    int e = errno;
    close(fd);
    unlink(tmp);
    return svm_error(e, "tls init: %s: %s", tmp, strerror(e));
  }
  ok = cert ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  if (fclose(f) != 0)
    ok = 0;
  if (!ok || rename(tmp, path) < 0) {
    int e = errno ? errno : EIO;
    unlink(tmp);
    ERR_clear_error();
    return svm_error(e, "tls init: cannot write %s: %s", path, strerror(e));
  }
  return 0;
}

static EVP_PKEY *load_pem(const char *dir, const char *name, X509 **cert)
{
  char path[PATH_MAX];
  EVP_PKEY *key = NULL;
  FILE *f;

  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
    svm_error(ENAMETOOLONG, "tls init: %s/%s: path too long", dir, name);
    return NULL;
  }
  f = fopen(path, "re");
  if (!f) {
    svm_error(errno, "tls init: %s: %s", path, strerror(errno));
    return NULL;
  }
  if (cert)
    *cert = PEM_read_X509(f, NULL, NULL, NULL);
  else
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (cert ? !*cert : !key) {
    ossl_error(path);
    return NULL;
  }
  return cert ? (EVP_PKEY *)1 : key;
}

/* A key and certificate for one role of host, written as PREFIX-cert.pem / PREFIX-key.pem. */
static int make_leaf(const char *dir, const char *host, const char *prefix, const char *eku,
                     X509 *ca, EVP_PKEY *ca_key, int days)
{
  char san[300], file[64];
  const int nids[] = { NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
                       NID_subject_alt_name, NID_subject_key_identifier,
                       NID_authority_key_identifier, 0 };
  const char *values[7];
  EVP_PKEY *key;
  X509 *cert;
  ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
  int r;

  snprintf(san, sizeof san, "%s:%s", ip ? "IP" : "DNS", host);
  ASN1_OCTET_STRING_free(ip);
  values[0] = "critical,CA:FALSE";
  values[1] = "critical,digitalSignature,keyEncipherment";
  values[2] = eku;
  values[3] = san;
  values[4] = "hash";
  values[5] = "keyid";
  values[6] = NULL;

  key = EVP_EC_gen("P-256");
  if (!key)
    return ossl_error("EC key");
  cert = make_cert(key, host, ca, ca_key, days, nids, values);
  if (!cert) {
    EVP_PKEY_free(key);
    return -svm_last_errno();
  }
  snprintf(file, sizeof file, "%s-key.pem", prefix);
  r = write_pem(dir, file, 0600, NULL, key);
  if (r == 0) {
    snprintf(file, sizeof file, "%s-cert.pem", prefix);
    r = write_pem(dir, file, 0644, cert, NULL);
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return r;
}

int nfc_tls_make_credentials(const char *dir, const char *host, const char *ca_dir, int days)
{
  const int ca_nids[] = { NID_basic_constraints, NID_key_usage, NID_subject_key_identifier, 0 };
  const char *const ca_values[] = { "critical,CA:TRUE", "critical,keyCertSign,cRLSign", "hash",
                                    NULL };
  EVP_PKEY *ca_key = NULL;
  X509 *ca = NULL;
  int r;

  if (!host || !host[0] || strlen(host) > 64 || strpbrk(host, "/,=+\"\\<>;"))
    return svm_error(EINVAL, "tls init: '%s': a host name is 1 to 64 characters without "
                     "/,=+\"\\<>;", host ? host : "");
  if (days == 0)
    return svm_error(EINVAL, "tls init: days must not be 0");
  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    return svm_error(errno, "tls init: %s: %s", dir, strerror(errno));

  if (ca_dir) {
    if (!load_pem(ca_dir, "ca-cert.pem", &ca))
      return svm_error_prefix("reusing the CA of %s", ca_dir);
    if (!(ca_key = load_pem(ca_dir, "ca-key.pem", NULL))) {
      X509_free(ca);
      return svm_error_prefix("reusing the CA of %s (it needs ca-key.pem to sign)", ca_dir);
    }
    if (X509_check_private_key(ca, ca_key) != 1) {
      r = svm_error(EINVAL, "tls init: %s: ca-key.pem does not belong to ca-cert.pem", ca_dir);
      goto out;
    }
  } else {
    char cn[100];

    snprintf(cn, sizeof cn, "svmotion test CA (%s)", host);
    ca_key = EVP_EC_gen("P-256");
    if (!ca_key) {
      r = ossl_error("EC key");
      goto out;
    }
    /* The CA outlives what it signs: ten years, or expired like its leaves when asked. */
    ca = make_cert(ca_key, cn, NULL, ca_key, days > 0 ? 3650 : days, ca_nids, ca_values);
    if (!ca) {
      r = -svm_last_errno();
      goto out;
    }
    if ((r = write_pem(dir, "ca-key.pem", 0600, NULL, ca_key)) < 0)
      goto out;
  }
  if ((r = write_pem(dir, "ca-cert.pem", 0644, ca, NULL)) < 0 ||
      (r = make_leaf(dir, host, "server", "serverAuth", ca, ca_key, days)) < 0 ||
      (r = make_leaf(dir, host, "client", "clientAuth", ca, ca_key, days)) < 0)
    goto out;
  r = 0;
out:
  X509_free(ca);
  EVP_PKEY_free(ca_key);
  return r;
}
