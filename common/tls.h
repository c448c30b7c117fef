/*
 * tls — OpenSSL contexts for both daemons and the key-file checks.
 *
 * Builds SSL_CTX objects from files: server contexts (client listener, tunnel listener) and
 * client contexts (agent to relay, agent to an upstream PostgreSQL). Every SSL_CTX_* call of
 * the project lives here; per-connection SSL_* calls live in conn.c. Returns new contexts
 * (SSL_CTX_free them). Errors are written as a sentence into err[TLS_ERR_MAX].
 */
#ifndef PGB_TLS_H
#define PGB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>

#define TLS_ERR_MAX 512

struct tls_server_opts {
    const char *cert_file;      /* PEM chain (required) */
    const char *key_file;       /* PEM key (required; refused if group/other can read it) */
    const char *client_ca_file; /* verify client certificates against this CA (NULL: none asked) */
    bool require_client_cert;   /* fail the handshake when the client sends none */
    int min_version;            /* TLS1_2_VERSION or TLS1_3_VERSION (0 = TLS1_2_VERSION) */
    int max_version;            /* 0 = no maximum */
    const char *alpn;           /* protocol name to select, e.g. "postgresql" or "pgburrow/1" */
    bool alpn_required;         /* true: a client offering no ALPN is refused */
    size_t max_send_fragment;   /* 0 = OpenSSL default (16 KiB); clients get 8192 */
};

struct tls_client_opts {
    const char *ca_file;        /* CA to verify the server with (required) */
    const char *cert_file;      /* client certificate (optional) */
    const char *key_file;       /* its key (required with cert_file; permission-checked) */
    int min_version;            /* 0 = TLS1_2_VERSION */
    const char *alpn;           /* offered ALPN, e.g. "pgburrow/1" (NULL: none) */
};

SSL_CTX *tls_server_ctx_new(const struct tls_server_opts *o, char *err);
SSL_CTX *tls_client_ctx_new(const struct tls_client_opts *o, char *err);

/* Refuse a private key file that group or others can read/write (as PostgreSQL does), or
 * that is not a regular file. Returns 0 or negative with err filled. */
int tls_check_key_file(const char *path, char *err);

/* "TLSv1.2" / "TLSv1.3" -> TLS1_2_VERSION...; TLSv1 and TLSv1.1 are refused. */
int tls_parse_version(const char *s, int *out);

/* The CN of a certificate's subject into buf[cap]; 0 or -ENOENT. */
int tls_cert_common_name(X509 *cert, char *buf, size_t cap);

/* Last OpenSSL error queue entry as text (and clears the queue). */
const char *tls_last_error(char *buf, size_t cap);

#endif
