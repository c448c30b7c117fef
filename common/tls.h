/*
 * tls — OpenSSL contexts for both daemons and the key-file checks.
 *
 * Builds SSL_CTX objects from files: server contexts (client listener, tunnel listener) and
 * client contexts (agent to relay, agent to an upstream PostgreSQL). Every SSL_CTX_* call of
 * the project lives here; per-connection SSL_* calls live in conn.c. Returns new contexts
 * (SSL_CTX_free them). Errors are written as a sentence into err (cap bytes).
 */
#ifndef PGB_TLS_H
#define PGB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>
#include "common/err.h"

/* TLS 1.2 cipher list of every context unless configured: forward secrecy (ECDHE) and AEAD
 * only (Mozilla "intermediate" without DHE); no CBC, no SHA-1 MAC, no RSA key exchange.
 * TLS 1.3 suites are OpenSSL's defaults (all AEAD). */
#define TLS_DEFAULT_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* The mark of an agent certificate: a URI subjectAltName "pgburrow-agent:NAME", NAME equal to
 * the subject CN. The relay requires it on the tunnel listener and refuses a certificate that
 * carries it as a client certificate, so that agent and client certificates are never
 * interchangeable, even when one CA signs both. */
#define TLS_AGENT_URI_SCHEME "pgburrow-agent:"

struct tls_server_opts {
    const char *cert_file;      /* PEM chain (required) */
    const char *key_file;       /* PEM key (required; refused if group/other can read it) */
    const char *client_ca_file; /* verify client certificates against this CA (NULL: none asked) */
    const char
        *client_crl_file;     /* with client_ca_file: CRLs checked for the client's certificate */
    bool require_client_cert; /* fail the handshake when the client sends none */
    int min_version;          /* TLS1_2_VERSION or TLS1_3_VERSION (0 = TLS1_2_VERSION) */
    int max_version;          /* 0 = no maximum */
    const char *alpn;         /* protocol name to select, e.g. "postgresql" or "pgburrow/1" */
    bool alpn_required;       /* true: a client offering no ALPN is refused */
    size_t max_send_fragment; /* 0 = OpenSSL default (16 KiB); clients get 8192 */
    const char *ciphers;      /* TLS 1.2 cipher list, OpenSSL syntax (NULL: TLS_DEFAULT_CIPHERS) */
    const char *ciphersuites; /* TLS 1.3 suites, "A:B" (NULL: OpenSSL default) */
    const char *groups;       /* key exchange groups, "X25519:P-256" (NULL: OpenSSL default) */
    /* Ask every client for a certificate, but neither require nor verify it during the
     * handshake: the owner verifies it later with conn_tls_verify_peer() against the store of
     * whatever the certificate is for (the relay: the route, known only after the
     * StartupMessage). The CertificateRequest lists the subjects of the CAs in these files.
     * Not with client_ca_file. */
    const char *const *request_cert_ca_files;
    size_t nrequest_cert_ca_files;
};

/* What a verified client certificate says, for logs and identity checks. */
struct tls_peer_info {
    char cn[256];        /* subject CN ("" when absent) */
    char subject[256];   /* RFC 4514 form, blanks and control bytes escaped as \XX */
    char serial[80];     /* hexadecimal */
    bool agent_mark;     /* the leaf carries a URI SAN pgburrow-agent:... (an agent certificate) */
    long long not_after; /* earliest notAfter of the verified chain, seconds since the epoch */
};

struct tls_client_opts {
    const char *ca_file;   /* CA to verify the server with (required) */
    const char *cert_file; /* client certificate (optional) */
    const char *key_file;  /* its key (required with cert_file; permission-checked) */
    int min_version;       /* 0 = TLS1_2_VERSION */
    const char *alpn;      /* offered ALPN, e.g. "pgburrow/1" (NULL: none) */
    bool verify_none;      /* encrypt only, accept any certificate (PostgreSQL's
                              sslmode=require); ca_file may then be NULL */
};

SSL_CTX *tls_server_ctx_new(const struct tls_server_opts *o, char *err, size_t cap);
SSL_CTX *tls_client_ctx_new(const struct tls_client_opts *o, char *err, size_t cap);
/* Another reference on ctx (to hold it across a reload); release it with SSL_CTX_free. */
SSL_CTX *tls_ctx_ref(SSL_CTX *ctx);

/* Refuse a private key file that group or others can read/write (as PostgreSQL does), or
 * that is not a regular file. Returns 0 or negative with err filled. */
int tls_check_key_file(const char *path, char *err, size_t cap);

/* "TLSv1.2" / "TLSv1.3" -> TLS1_2_VERSION...; TLSv1 and TLSv1.1 are refused. */
int tls_parse_version(const char *s, int *out);

/* The CN of a certificate's subject into buf[cap]; 0 or -ENOENT. */
int tls_cert_common_name(X509 *cert, char *buf, size_t cap);
/* The CN of the first (leaf) certificate in the PEM file path into buf[cap]. Returns 0, or
 * negative with a sentence in err[err_cap] (unreadable file, no or ambiguous CN). */
int tls_cert_file_cn(const char *path, char *buf, size_t cap, char *err, size_t err_cap);
/* The earliest notAfter of the certificates in the PEM file path (a chain, or a CA bundle),
 * seconds since the epoch, into *out. 0, or negative when the file cannot be read or holds no
 * certificate with a readable notAfter. */
int tls_cert_file_not_after(const char *path, long long *out);

/* The agent name of an agent certificate: its URI SAN "pgburrow-agent:NAME" (scheme compared
 * without case), which must be the only such SAN and equal the subject CN. Returns 0 with NAME
 * in buf[cap]; -ENOENT when the certificate has no such SAN; -EINVAL (sentence in
 * err[err_cap]) when it has several, an empty or NUL-bearing one, or a CN that differs. */
int tls_cert_agent_name(X509 *cert, char *buf, size_t cap, char *err, size_t err_cap);

/* Validate TLS policy values (as --check-config does). 0 or -EINVAL with err filled.
 * ciphers: an OpenSSL cipher list that selects at least one TLS 1.2 cipher; ciphersuites:
 * TLS 1.3 suite names separated by ':', each one known; groups: group names, each known. */
int tls_check_ciphers(const char *ciphers, char *err, size_t cap);
int tls_check_ciphersuites(const char *suites, char *err, size_t cap);
int tls_check_groups(const char *groups, char *err, size_t cap);

/* A certificate store for verifying client certificates after the handshake: the CAs of
 * ca_file, and when crl_file is not NULL its CRLs, checked for the leaf certificate
 * (X509_V_FLAG_CRL_CHECK). Returns new (X509_STORE_free), or NULL with err filled. */
X509_STORE *tls_store_new(const char *ca_file, const char *crl_file, char *err, size_t cap);

/* Verify leaf (with the untrusted chain the peer sent, may be NULL) against store for client
 * authentication; fill *info. Returns 0, or -EACCES with the X509 reason in err
 * ("certificate revoked"), or -EINVAL/-ENOMEM. */
int tls_verify_client_cert(X509 *leaf, STACK_OF(X509) * chain, X509_STORE *store,
                           struct tls_peer_info *info, char *err, size_t cap);

/* Last OpenSSL error queue entry as text (and clears the queue). */
const char *tls_last_error(char *buf, size_t cap);
/* One OpenSSL error entry as text: its reason, then open + its data + close when it has some
 * (data and flags as ERR_get_error_all gives them). Returns buf. */
const char *tls_error_text(unsigned long e, const char *data, int flags, const char *open,
                           const char *close, char *buf, size_t cap);

#endif
