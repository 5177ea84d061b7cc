/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls.h - the receivers' TLS server side: one OpenSSL context loaded from
 * a PEM certificate chain and key, TLS 1.2 or newer, with the ALPN
 * protocol its receiver speaks. Handshakes that fail are logged once per
 * connection with the peer's address; key material never is.
 */
#ifndef O2L_TLS_H
#define O2L_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "o2l/log.h"

/* The application protocol a receiver negotiates. */
enum o2l_tls_alpn {
    /* OTLP/HTTP: "http/1.1" when offered; other offers are not answered. */
    O2L_TLS_ALPN_HTTP1 = 0,
    /* OTLP/gRPC: "h2"; a client offering ALPN without h2 is refused. */
    O2L_TLS_ALPN_H2
};

struct o2l_tls;

/*
 * Loads |cert_file| (PEM, the server certificate first, then any
 * intermediates) and |key_file| (PEM, unencrypted) and checks that they
 * belong together. Log lines go to |log| under |component|; both must
 * outlive the context and every connection made from it. Returns NULL
 * with a message naming the setting (receivers.tls.cert_file or
 * receivers.tls.key_file) in |err| (|err_len| bytes).
 */
struct o2l_tls *o2l_tls_new(const char *cert_file, const char *key_file,
                            enum o2l_tls_alpn alpn, const struct o2l_log *log,
                            const char *component, char *err, size_t err_len);

/*
 * A new server-side connection object for one accepted socket, or NULL
 * when memory runs out. Whoever frees it (SSL_free, or a bufferevent
 * that owns it) also releases what this module attached to it.
 */
SSL *o2l_tls_ssl_new(struct o2l_tls *t);

/* "TLSv1.3 alpn=h2" for an established connection, written to |buf|. */
const char *o2l_tls_describe(const SSL *ssl, char *buf, size_t len);

/* Frees the context. Connections made from it must be gone. Accepts NULL. */
void o2l_tls_free(struct o2l_tls *t);

#endif /* O2L_TLS_H */
