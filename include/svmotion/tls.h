/* svmotion — TLS credentials for the agents (svmctl tls init).
 *
 * svmd's --tls-dir takes a directory in the layout of QEMU's and libvirt's x509 credentials:
 *   ca-cert.pem                        the CA every peer's certificate must chain to
 *   server-cert.pem, server-key.pem    what this host presents when others connect to it
 *   client-cert.pem, client-key.pem    what this host presents when it connects to others
 * so one directory serves svmotion and QEMU's migration TLS.
 */
#ifndef SVMOTION_TLS_H
#define SVMOTION_TLS_H

#include <svmotion/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Make test credentials in dir (created 0700 if missing), with the OpenSSL library:
 *   - without ca_dir: a new CA (EC P-256), ca-cert.pem (0644) and ca-key.pem (0600) in dir;
 *   - with ca_dir: ca_dir/ca-cert.pem and ca_dir/ca-key.pem sign, ca-cert.pem is copied;
 *   - server-cert.pem and client-cert.pem (0644) for host: CN=host, subjectAltName DNS:host
 *     (IP:host for an address literal), and their keys (0600).
 * days: validity of the new certificates; a negative value makes certificates that expired
 * -days days ago (for tests). Existing files are replaced atomically. 0 or -errno. */
int nfc_tls_make_credentials(const char *dir, const char *host, const char *ca_dir, int days);

#ifdef __cplusplus
}
#endif
#endif
