/* SPDX-License-Identifier: Apache-2.0 */
/* tls.c - the receivers' OpenSSL server contexts. */
#include "o2l/tls.h"

#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "o2l/common.h"

#define SETTING_CERT "receivers.tls.cert_file"
#define SETTING_KEY  "receivers.tls.key_file"

/* ALPN protocol lists in wire format: a length byte, then the name. */
static const unsigned char alpn_h2[] = {2, 'h', '2'};
static const unsigned char alpn_http1[] = {8,   'h', 't', 't', 'p',
                                           '/', '1', '.', '1'};

struct o2l_tls {
    SSL_CTX *ctx;
    enum o2l_tls_alpn alpn;
    const struct o2l_log *log;
    const char *component;
};

/* What is known of one connection, attached to its SSL object. */
struct tls_conn {
    struct o2l_tls *t;
    char peer[64];
    char reason[128]; /* why the handshake failed, when known */
    bool established;
    bool logged; /* the failure has been logged already */
};

/* The ex_data slot holding a struct tls_conn; taken once. */
static int conn_index = -1;

static const char *error_reason(unsigned long e)
{
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    return r ? r : "unknown error";
}

static void peer_of_fd(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(buf, len, "?");
        return;
    }
    snprintf(buf, len, "%.46s:%.6s", host, port);
}

static struct tls_conn *conn_of(const SSL *ssl)
{
    return conn_index < 0 ? NULL : SSL_get_ex_data(ssl, conn_index);
}

static void remember_peer(const SSL *ssl, struct tls_conn *tc)
{
    if (tc->peer[0] == '\0') {
        peer_of_fd(SSL_get_fd(ssl), tc->peer, sizeof(tc->peer));
    }
}

/*
 * Called by OpenSSL when an SSL object is freed, for every SSL in the
 * process (curl's too): only ours carry a struct tls_conn. A connection
 * that never finished its handshake is logged here, once.
 */
static void conn_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                         long argl, void *argp)
{
    struct tls_conn *tc = ptr;

    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (!tc) {
        return;
    }
    if (!tc->established && !tc->logged) {
        remember_peer(parent, tc);
        o2l_log_warn(tc->t->log, tc->t->component,
                     "peer=%s TLS handshake failed: %s", tc->peer,
                     tc->reason[0] ? tc->reason
                                   : "closed before the handshake completed");
    }
    o2l_free(tc);
}

static void info_cb(const SSL *ssl, int where, int ret)
{
    struct tls_conn *tc = conn_of(ssl);

    if (!tc) {
        return;
    }
    if (where & SSL_CB_HANDSHAKE_START) {
        remember_peer(ssl, tc);
    }
    if (where & SSL_CB_HANDSHAKE_DONE) {
        tc->established = true;
    }
    /* An error is still queued while the handshake call returns. */
    if ((where & SSL_CB_ACCEPT_EXIT) && ret <= 0 && !tc->reason[0] &&
        ERR_peek_error() != 0) {
        snprintf(tc->reason, sizeof(tc->reason), "%s",
                 error_reason(ERR_peek_error()));
    }
    if ((where & SSL_CB_ALERT) && (where & SSL_CB_WRITE) && !tc->reason[0]) {
        snprintf(tc->reason, sizeof(tc->reason), "sent alert %s",
                 SSL_alert_desc_string_long(ret));
    }
}

/* Picks this receiver's protocol from the client's ALPN offer. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    struct o2l_tls *t = arg;
    struct tls_conn *tc = conn_of(ssl);
    const unsigned char *want =
        t->alpn == O2L_TLS_ALPN_H2 ? alpn_h2 : alpn_http1;
    unsigned int want_len = t->alpn == O2L_TLS_ALPN_H2
                                ? (unsigned int)sizeof(alpn_h2)
                                : (unsigned int)sizeof(alpn_http1);
    unsigned char *chosen = NULL;

    if (SSL_select_next_proto(&chosen, outlen, want, want_len, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = chosen;
        return SSL_TLSEXT_ERR_OK;
    }
    if (t->alpn != O2L_TLS_ALPN_H2) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    if (tc) {
        remember_peer(ssl, tc);
        tc->logged = true;
    }
    o2l_log_warn(t->log, t->component,
                 "peer=%s refused: its TLS ALPN offer lacks h2, which gRPC "
                 "needs",
                 tc ? tc->peer : "?");
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Encrypted keys would make OpenSSL ask on the terminal: refuse them. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)arg;
    return 0;
}

/* Fails with errno's reason when |path| cannot be opened for reading. */
static int check_readable(const char *path, const char *setting, char *err,
                          size_t err_len)
{
    FILE *f = fopen(path, "rb");

    if (!f) {
        snprintf(err, err_len, "setting %s: cannot open %s: %s", setting, path,
                 strerror(errno));
        return O2L_EINVAL;
    }
    fclose(f);
    return O2L_OK;
}

struct o2l_tls *o2l_tls_new(const char *cert_file, const char *key_file,
                            enum o2l_tls_alpn alpn, const struct o2l_log *log,
                            const char *component, char *err, size_t err_len)
{
    struct o2l_tls *t = NULL;

    ERR_clear_error();
    if (conn_index < 0) {
        conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_free_cb);
    }
    if (conn_index < 0) {
        snprintf(err, err_len, "TLS: out of memory");
        goto fail;
    }
    if (check_readable(cert_file, SETTING_CERT, err, err_len) != O2L_OK ||
        check_readable(key_file, SETTING_KEY, err, err_len) != O2L_OK) {
        goto fail;
    }
    t = o2l_calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, err_len, "TLS: out of memory");
        goto fail;
    }
    t->alpn = alpn;
    t->log = log;
    t->component = component;
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (!t->ctx || SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) != 1) {
        snprintf(err, err_len, "TLS: cannot create a context: %s",
                 error_reason(ERR_peek_last_error()));
        goto fail;
    }
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE |
                                    SSL_OP_NO_COMPRESSION);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /*
     * Clients often close without close_notify; both protocols frame
     * their messages, so a cut-off one is seen without it.
     */
    SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    SSL_CTX_set_default_passwd_cb(t->ctx, no_passphrase);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
        snprintf(err, err_len,
                 "setting %s: cannot load a PEM certificate from %s: %s",
                 SETTING_CERT, cert_file, error_reason(ERR_peek_error()));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, err_len,
                 "setting %s: cannot use the PEM private key in %s (it must "
                 "be unencrypted and match %s): %s",
                 SETTING_KEY, key_file, SETTING_CERT,
                 error_reason(ERR_peek_last_error()));
        goto fail;
    }
    if (SSL_CTX_check_private_key(t->ctx) != 1) {
        snprintf(err, err_len,
                 "setting %s: the key in %s does not match the certificate "
                 "of %s",
                 SETTING_KEY, key_file, SETTING_CERT);
        goto fail;
    }
    SSL_CTX_set_info_callback(t->ctx, info_cb);
    SSL_CTX_set_alpn_select_cb(t->ctx, alpn_cb, t);
    ERR_clear_error();
    return t;

fail:
    ERR_clear_error();
    o2l_tls_free(t);
    return NULL;
}

SSL *o2l_tls_ssl_new(struct o2l_tls *t)
{
    struct tls_conn *tc = o2l_calloc(1, sizeof(*tc));
    SSL *ssl;

    if (!tc) {
        return NULL;
    }
    tc->t = t;
    ssl = SSL_new(t->ctx);
    if (!ssl) {
        ERR_clear_error();
        o2l_free(tc);
        return NULL;
    }
    if (SSL_set_ex_data(ssl, conn_index, tc) != 1) {
        /* Not attached: freeing the SSL object would not free it. */
        SSL_free(ssl);
        o2l_free(tc);
        ERR_clear_error();
        return NULL;
    }
    return ssl;
}

const char *o2l_tls_describe(const SSL *ssl, char *buf, size_t len)
{
    const unsigned char *proto = NULL;
    unsigned int proto_len = 0;

    SSL_get0_alpn_selected(ssl, &proto, &proto_len);
    snprintf(buf, len, "%s alpn=%.*s", SSL_get_version(ssl),
             proto ? (int)proto_len : 4, proto ? (const char *)proto : "none");
    return buf;
}

void o2l_tls_free(struct o2l_tls *t)
{
    if (!t) {
        return;
    }
    SSL_CTX_free(t->ctx);
    o2l_free(t);
}
