/*
 * tls — OpenSSL contexts for both daemons and the key-file checks (see tls.h).
 *
 * Every context gets: TLS 1.2 at least, no renegotiation, no compression, and
 * SSL_MODE_RELEASE_BUFFERS so that an idle connection does not keep OpenSSL's 16 KiB+ read and
 * write buffers (thousands of idle sessions are the common case). Server contexts issue no
 * session tickets and keep no session cache: clients of the relay reconnect rarely, agents hold
 * one long-lived tunnel, and resumption would only widen what has to be reasoned about.
 *
 * ALPN on the server: the protocol to select and whether it is required hang off the SSL_CTX
 * (ex_data, freed with the context). A client offering other protocols only gets the fatal
 * no_application_protocol alert (RFC 7301); a client offering none is accepted unless the
 * context requires ALPN, which is checked in the ClientHello callback so that the handshake fails
 * with the same alert before any certificate is sent.
 */
#include "common/tls.h"
#include "common/tls_guard.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct tls_alpn {
    bool required;
    unsigned char len;
    unsigned char name[255];
};

/* Written once (CRYPTO_THREAD_run_once), read-only afterwards: the ex_data slot that lets a
 * context own its ALPN settings. */
static CRYPTO_ONCE tls_alpn_once = CRYPTO_ONCE_STATIC_INIT;
static int tls_alpn_index = -1;

static void tls_alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    free(ptr);
}

static void tls_alpn_index_init(void)
{
    tls_alpn_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_alpn_free);
}

const char *tls_error_text(unsigned long e, const char *data, int flags, const char *open,
                           const char *close, char *buf, size_t cap)
{
    const char *r = ERR_reason_error_string(e);
    char code[128];

    if (!r) {
        ERR_error_string_n(e, code, sizeof(code));
        r = code;
    }
    if (data && (flags & ERR_TXT_STRING) && data[0])
        snprintf(buf, cap, "%s%s%s%s", r, open, data, close);
    else
        snprintf(buf, cap, "%s", r);
    return buf;
}

const char *tls_last_error(char *buf, size_t cap)
{
    const char *file = NULL, *func = NULL, *data = NULL;
    int line = 0, flags = 0;
    /* The oldest entry of the queue is the cause; later ones are callers adding context
     * ("system lib", "PEM lib"). */
    unsigned long e = ERR_get_error_all(&file, &line, &func, &data, &flags);

    if (e == 0)
        snprintf(buf, cap, "unknown error");
    else
        tls_error_text(e, data, flags, " (", ")", buf, cap);
    ERR_clear_error();
    return buf;
}

int tls_check_key_file(const char *path, char *err, size_t cap)
{
    struct stat st;

    if (!path) {
        snprintf(err, cap, "no private key file given");
        return -EINVAL;
    }
    if (stat(path, &st) < 0) {
        int e = errno;

        snprintf(err, cap, "could not access private key file \"%s\": %s", path, strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, cap, "private key file \"%s\" is not a regular file", path);
        return -EINVAL;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, cap,
                 "private key file \"%s\" has group or world access; permissions should be "
                 "u=rw (0600) or less",
                 path);
        return -EPERM;
    }
    return 0;
}

int tls_parse_version(const char *s, int *out)
{
    if (!s)
        return -EINVAL;
    if (strcasecmp(s, "TLSv1.2") == 0)
        *out = TLS1_2_VERSION;
    else if (strcasecmp(s, "TLSv1.3") == 0)
        *out = TLS1_3_VERSION;
    else
        return -EINVAL;
    return 0;
}

int tls_cert_common_name(X509 *cert, char *buf, size_t cap)
{
    X509_NAME *name;
    unsigned char *utf8 = NULL;
    int idx, len, rc = -ENOENT;

    if (!cert || !buf || cap == 0)
        return -EINVAL;
    buf[0] = '\0';
    if (!(name = X509_get_subject_name(cert)))
        goto out;
    if ((idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) < 0)
        goto out;
    /* Two CNs would make the identity ambiguous: refuse rather than pick one. */
    if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) {
        rc = -EINVAL;
        goto out;
    }
    len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
    if (len < 0) {
        rc = -EINVAL;
        goto out;
    }
    /* An embedded NUL would let "db1\0.evil" pass as "db1". */
    if (memchr(utf8, '\0', (size_t)len) || (size_t)len >= cap) {
        rc = -EINVAL;
        goto out;
    }
    memcpy(buf, utf8, (size_t)len);
    buf[len] = '\0';
    rc = 0;
out:
    OPENSSL_free(utf8);
    ERR_clear_error();
    return rc;
}

int tls_cert_agent_name(X509 *cert, char *buf, size_t cap, char *err, size_t err_cap)
{
    const size_t scheme_len = strlen(TLS_AGENT_URI_SCHEME);
    GENERAL_NAMES *sans = NULL;
    char cn[256];
    int crit = 0, found = 0, rc = -ENOENT;

    err[0] = '\0';
    if (cap > 0)
        buf[0] = '\0';
    sans = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (!sans && crit == -2) {
        snprintf(err, err_cap, "the certificate has several subjectAltName extensions");
        rc = -EINVAL;
        goto out;
    }
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        const unsigned char *p;
        size_t n;

        if (g->type != GEN_URI)
            continue;
        p = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        n = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (n < scheme_len || strncasecmp((const char *)p, TLS_AGENT_URI_SCHEME, scheme_len) != 0)
            continue;
        if (found++) {
            snprintf(err, err_cap, "the certificate has several %sNAME URIs", TLS_AGENT_URI_SCHEME);
            rc = -EINVAL;
            goto out;
        }
        n -= scheme_len;
        p += scheme_len;
        if (n == 0 || n >= cap || memchr(p, '\0', n)) {
            snprintf(err, err_cap, "the certificate's %sNAME URI has an unusable name",
                     TLS_AGENT_URI_SCHEME);
            rc = -EINVAL;
            goto out;
        }
        memcpy(buf, p, n);
        buf[n] = '\0';
    }
    if (!found)
        goto out;
    /* one name per agent: logs, route lists and the agent itself (its CN) must agree */
    if (tls_cert_common_name(cert, cn, sizeof(cn)) < 0 || strcmp(cn, buf) != 0) {
        snprintf(err, err_cap, "the certificate's CN is not its agent name \"%.80s\"", buf);
        rc = -EINVAL;
        goto out;
    }
    rc = 0;
out:
    if (rc < 0 && cap > 0)
        buf[0] = '\0';
    GENERAL_NAMES_free(sans);
    ERR_clear_error();
    return rc;
}

int tls_cert_file_cn(const char *path, char *buf, size_t cap, char *err, size_t err_cap)
{
    X509 *cert = NULL;
    FILE *f = NULL;
    int rc;

    if (cap > 0)
        buf[0] = '\0';
    if (!(f = fopen(path, "r"))) {
        rc = -errno;
        snprintf(err, err_cap, "could not open certificate \"%s\": %s", path, strerror(-rc));
        goto out;
    }
    ERR_clear_error();
    /* the first certificate of a chain file is the leaf, as SSL_CTX_use_certificate_chain_file
     * takes it */
    if (!(cert = PEM_read_X509(f, NULL, NULL, NULL))) {
        char e[256];
        snprintf(err, err_cap, "could not read certificate \"%s\": %s", path,
                 tls_last_error(e, sizeof(e)));
        rc = -EINVAL;
        goto out;
    }
    rc = tls_cert_common_name(cert, buf, cap);
    if (rc < 0)
        snprintf(err, err_cap, "certificate \"%s\" has %s common name (CN)", path,
                 rc == -ENOENT ? "no" : "an unusable");
out:
    X509_free(cert);
    if (f)
        fclose(f);
    return rc;
}

static long long tls_chain_not_after(STACK_OF(X509) * chain);

int tls_cert_file_not_after(const char *path, long long *out)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    FILE *f = NULL;
    X509 *cert;
    int rc = -ENOMEM;

    if (!certs)
        goto out;
    if (!(f = fopen(path, "r"))) {
        rc = -errno;
        goto out;
    }
    ERR_clear_error();
    while ((cert = PEM_read_X509(f, NULL, NULL, NULL))) {
        if (!sk_X509_push(certs, cert)) {
            X509_free(cert);
            goto out;
        }
    }
    *out = tls_chain_not_after(certs);
    rc = *out > 0 ? 0 : -EINVAL;
out:
    ERR_clear_error(); /* the read that ended the loop left its end-of-file error */
    sk_X509_pop_free(certs, X509_free);
    if (f)
        fclose(f);
    return rc;
}

static int tls_check_readable(const char *what, const char *path, char *err, size_t cap)
{
    struct stat st;

    if (stat(path, &st) < 0) {
        int e = errno;

        snprintf(err, cap, "could not access %s \"%s\": %s", what, path, strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, cap, "%s \"%s\" is not a regular file", what, path);
        return -EINVAL;
    }
    return 0;
}

static int tls_ctx_common(SSL_CTX *ctx, int min_version, int max_version, char *err, size_t cap)
{
    char e[256];
    int min = min_version ? min_version : TLS1_2_VERSION;

    if (min < TLS1_2_VERSION || (max_version && max_version < min)) {
        snprintf(err, cap, "invalid TLS version range (TLSv1.2 is the oldest allowed)");
        return -EINVAL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
        (max_version && SSL_CTX_set_max_proto_version(ctx, max_version) != 1)) {
        snprintf(err, cap, "could not set the TLS version range: %s", tls_last_error(e, sizeof(e)));
        return -EINVAL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* OpenSSL's default TLS 1.2 list still has CBC suites with SHA-1 MACs; a server context's
     * configured tls_ciphers replaces this afterwards (tls_server_policy) */
    if (SSL_CTX_set_cipher_list(ctx, TLS_DEFAULT_CIPHERS) != 1) {
        snprintf(err, cap, "could not set the TLS 1.2 cipher list: %s",
                 tls_last_error(e, sizeof(e)));
        return -EINVAL;
    }
    /* NO_AUTO_CHAIN: send exactly the chain file, not a chain OpenSSL completes from the trust
     * store (the client CA file), which would add roots the peer must not need. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
    return 0;
}

static int tls_load_cert_key(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *err,
                             size_t cap)
{
    char e[256];
    int rc;

    if ((rc = tls_check_readable("certificate file", cert_file, err, cap)) < 0)
        return rc;
    if ((rc = tls_check_key_file(key_file, err, cap)) < 0)
        return rc;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, cap, "could not load certificate file \"%s\": %s", cert_file,
                 tls_last_error(e, sizeof(e)));
        return -EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        unsigned long first = ERR_peek_error();

        if (ERR_GET_LIB(first) == ERR_LIB_X509 &&
            ERR_GET_REASON(first) == X509_R_KEY_VALUES_MISMATCH) {
            snprintf(err, cap, "private key file \"%s\" does not match certificate file \"%s\"",
                     key_file, cert_file);
            ERR_clear_error();
            return -EINVAL;
        }
        snprintf(err, cap, "could not load private key file \"%s\": %s", key_file,
                 tls_last_error(e, sizeof(e)));
        return -EINVAL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, cap, "private key file \"%s\" does not match certificate file \"%s\"",
                 key_file, cert_file);
        ERR_clear_error();
        return -EINVAL;
    }
    return 0;
}

static int tls_load_ca(SSL_CTX *ctx, const char *ca_file, char *err, size_t cap)
{
    char e[256];
    int rc;

    if ((rc = tls_check_readable("CA file", ca_file, err, cap)) < 0)
        return rc;
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        snprintf(err, cap, "could not load CA file \"%s\": %s", ca_file,
                 tls_last_error(e, sizeof(e)));
        return -EINVAL;
    }
    return 0;
}

/* Renders a wire-format ALPN list as "a, b" for messages, printable characters only. */
static void tls_alpn_list_text(const unsigned char *in, unsigned int inlen, char *buf, size_t cap)
{
    size_t o = 0;
    unsigned int i = 0;

    buf[0] = '\0';
    while (i < inlen && o + 8 < cap) {
        unsigned int n = in[i++], j;

        if (o > 0) {
            buf[o++] = ',';
            buf[o++] = ' ';
        }
        for (j = 0; j < n && i + j < inlen && o + 4 < cap; j++)
            buf[o++] = isprint(in[i + j]) ? (char)in[i + j] : '?';
        i += n;
    }
    buf[o] = '\0';
}

static int tls_alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct tls_alpn *a = arg;
    char offered[160];
    unsigned int i = 0;

    while (i < inlen) {
        unsigned int n = in[i];

        if (n == 0 || i + 1 + n > inlen)
            break;
        if (n == a->len && memcmp(in + i + 1, a->name, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    tls_alpn_list_text(in, inlen, offered, sizeof(offered));
    ERR_raise_data(ERR_LIB_SSL, SSL_R_NO_APPLICATION_PROTOCOL, "client offered ALPN %s, not %.*s",
                   offered, (int)a->len, (const char *)a->name);
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int tls_client_hello(SSL *s, int *al, void *arg)
{
    const struct tls_alpn *a = arg;
    const unsigned char *ext = NULL;
    size_t len = 0;

    if (!a->required || SSL_client_hello_get0_ext(
                            s, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len) == 1)
        return SSL_CLIENT_HELLO_SUCCESS;
    ERR_raise_data(ERR_LIB_SSL, SSL_R_NO_APPLICATION_PROTOCOL, "client did not offer ALPN %.*s",
                   (int)a->len, (const char *)a->name);
    *al = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
}

static int tls_server_alpn(SSL_CTX *ctx, const char *alpn, bool required, char *err, size_t cap)
{
    struct tls_alpn *a;
    size_t n = strlen(alpn);

    if (n == 0 || n > 255) {
        snprintf(err, cap, "invalid ALPN protocol name \"%s\"", alpn);
        return -EINVAL;
    }
    if (CRYPTO_THREAD_run_once(&tls_alpn_once, tls_alpn_index_init) != 1 || tls_alpn_index < 0) {
        snprintf(err, cap, "could not set up ALPN");
        ERR_clear_error();
        return -ENOMEM;
    }
    if (!(a = calloc(1, sizeof(*a)))) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    a->required = required;
    a->len = (unsigned char)n;
    memcpy(a->name, alpn, n);
    if (SSL_CTX_set_ex_data(ctx, tls_alpn_index, a) != 1) {
        free(a);
        snprintf(err, cap, "could not set up ALPN");
        ERR_clear_error();
        return -ENOMEM;
    }
    /* From here the context owns a (freed by tls_alpn_free). */
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, a);
    if (required)
        SSL_CTX_set_client_hello_cb(ctx, tls_client_hello, a);
    return 0;
}

static int tls_server_policy(SSL_CTX *ctx, const struct tls_server_opts *o, char *err, size_t cap);

SSL_CTX *tls_server_ctx_new(const struct tls_server_opts *o, char *err, size_t cap)
{
    SSL_CTX *ctx = NULL, *ret = NULL;
    char e[256];

    err[0] = '\0';
    if (!o->cert_file || !o->key_file) {
        snprintf(err, cap, "a certificate file and a private key file are required");
        goto out;
    }
    if (o->require_client_cert && !o->client_ca_file) {
        snprintf(err, cap, "requiring client certificates needs a client CA file");
        goto out;
    }
    if (o->nrequest_cert_ca_files && o->client_ca_file) {
        snprintf(err, cap, "client certificates are verified in the handshake or later, not both");
        goto out;
    }
    if (o->alpn_required && !o->alpn) {
        snprintf(err, cap, "requiring ALPN needs a protocol name");
        goto out;
    }
    if (o->max_send_fragment && (o->max_send_fragment < 512 || o->max_send_fragment > 16384)) {
        snprintf(err, cap, "TLS max send fragment must be between 512 and 16384");
        goto out;
    }
    ERR_clear_error();
    if (!(ctx = SSL_CTX_new(TLS_server_method()))) {
        snprintf(err, cap, "could not create a TLS context: %s", tls_last_error(e, sizeof(e)));
        goto out;
    }
    if (tls_ctx_common(ctx, o->min_version, o->max_version, err, cap) < 0)
        goto out;
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (tls_load_cert_key(ctx, o->cert_file, o->key_file, err, cap) < 0)
        goto out;
    if (o->client_ca_file) {
        STACK_OF(X509_NAME) * names;

        if (tls_load_ca(ctx, o->client_ca_file, err, cap) < 0)
            goto out;
        /* the CA names sent in CertificateRequest let clients pick the right certificate */
        if (!(names = SSL_load_client_CA_file(o->client_ca_file))) {
            snprintf(err, cap, "could not read CA names from \"%s\": %s", o->client_ca_file,
                     tls_last_error(e, sizeof(e)));
            goto out;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        if (o->client_crl_file) {
            X509_STORE *store = SSL_CTX_get_cert_store(ctx);
            X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
            if (tls_check_readable("CRL file", o->client_crl_file, err, cap) < 0)
                goto out;
            if (!lookup || X509_load_crl_file(lookup, o->client_crl_file, X509_FILETYPE_PEM) <= 0) {
                snprintf(err, cap, "could not load CRL file \"%s\": %s", o->client_crl_file,
                         tls_last_error(e, sizeof(e)));
                goto out;
            }
            X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
        }
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | (o->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
            NULL);
    }
    if (o->max_send_fragment &&
        SSL_CTX_set_max_send_fragment(ctx, (long)o->max_send_fragment) != 1) {
        snprintf(err, cap, "could not set the TLS max send fragment: %s",
                 tls_last_error(e, sizeof(e)));
        goto out;
    }
    /* A client's certificate chain is buffered whole before it is verified: bound it as
     * tls_guard does for plaintext handshakes (OpenSSL's default is 100 KiB). */
    SSL_CTX_set_max_cert_list(ctx, TLS_GUARD_CERT_MAX);
    if (o->alpn && tls_server_alpn(ctx, o->alpn, o->alpn_required, err, cap) < 0)
        goto out;
    if (tls_server_policy(ctx, o, err, cap) < 0)
        goto out;
    ret = ctx;
    ctx = NULL;
out:
    SSL_CTX_free(ctx);
    return ret;
}

SSL_CTX *tls_ctx_ref(SSL_CTX *ctx)
{
    if (ctx)
        SSL_CTX_up_ref(ctx);
    return ctx;
}

SSL_CTX *tls_client_ctx_new(const struct tls_client_opts *o, char *err, size_t cap)
{
    SSL_CTX *ctx = NULL, *ret = NULL;
    char e[256];

    err[0] = '\0';
    if (!o->ca_file && !o->verify_none) {
        snprintf(err, cap, "a CA file is required to verify the server");
        goto out;
    }
    if (!o->cert_file != !o->key_file) {
        snprintf(err, cap, "a client certificate and its key go together");
        goto out;
    }
    if (o->alpn && (strlen(o->alpn) == 0 || strlen(o->alpn) > 255)) {
        snprintf(err, cap, "invalid ALPN protocol name \"%s\"", o->alpn);
        goto out;
    }
    ERR_clear_error();
    if (!(ctx = SSL_CTX_new(TLS_client_method()))) {
        snprintf(err, cap, "could not create a TLS context: %s", tls_last_error(e, sizeof(e)));
        goto out;
    }
    if (tls_ctx_common(ctx, o->min_version, 0, err, cap) < 0)
        goto out;
    if (o->ca_file && tls_load_ca(ctx, o->ca_file, err, cap) < 0)
        goto out;
    SSL_CTX_set_verify(ctx, o->verify_none ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (o->cert_file && tls_load_cert_key(ctx, o->cert_file, o->key_file, err, cap) < 0)
        goto out;
    if (o->alpn) {
        unsigned char wire[256];
        size_t n = strlen(o->alpn);

        wire[0] = (unsigned char)n;
        memcpy(wire + 1, o->alpn, n);
        /* this one returns 0 on success */
        if (SSL_CTX_set_alpn_protos(ctx, wire, (unsigned int)(n + 1)) != 0) {
            snprintf(err, cap, "could not set ALPN: %s", tls_last_error(e, sizeof(e)));
            goto out;
        }
    }
    ret = ctx;
    ctx = NULL;
out:
    SSL_CTX_free(ctx);
    return ret;
}

/* ---- TLS policy and client certificates verified after the handshake -------------------- */

/* Runs on a scratch context, so that --check-config reports the same errors as start-up. */
static int tls_try_policy(const char *what, const char *value, int (*set)(SSL_CTX *, const char *),
                          char *err, size_t cap)
{
    SSL_CTX *ctx;
    char e[256];
    int rc = 0;

    ERR_clear_error();
    if (!(ctx = SSL_CTX_new(TLS_server_method()))) {
        snprintf(err, cap, "could not create a TLS context: %s", tls_last_error(e, sizeof(e)));
        return -ENOMEM;
    }
    if (set(ctx, value) != 1) {
        snprintf(err, cap, "%s \"%.200s\" not accepted by OpenSSL: %s", what, value,
                 tls_last_error(e, sizeof(e)));
        rc = -EINVAL;
    }
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

static int tls_set_cipher_list(SSL_CTX *ctx, const char *v)
{
    STACK_OF(SSL_CIPHER) * sk;
    int ok = 0;

    if (SSL_CTX_set_cipher_list(ctx, v) != 1)
        return 0;
    /* the TLS 1.3 suites are always in the list: look for one that TLS 1.2 can use */
    sk = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++)
        ok |= strcmp(SSL_CIPHER_get_version(sk_SSL_CIPHER_value(sk, i)), "TLSv1.3") != 0;
    if (!ok)
        ERR_raise_data(ERR_LIB_SSL, SSL_R_NO_CIPHER_MATCH, "no TLS 1.2 cipher selected");
    return ok;
}

static int tls_set_ciphersuites(SSL_CTX *ctx, const char *v)
{
    return SSL_CTX_set_ciphersuites(ctx, v);
}

static int tls_set_groups(SSL_CTX *ctx, const char *v)
{
    return SSL_CTX_set1_groups_list(ctx, v);
}

int tls_check_ciphers(const char *ciphers, char *err, size_t cap)
{
    return tls_try_policy("TLS 1.2 cipher list", ciphers, tls_set_cipher_list, err, cap);
}

int tls_check_ciphersuites(const char *suites, char *err, size_t cap)
{
    char name[128];
    const char *p = suites;

    if (!suites[0]) {
        snprintf(err, cap, "empty TLS 1.3 cipher suite list");
        return -EINVAL;
    }
    /* OpenSSL skips unknown names inside a list; a typo must not silently drop a suite. */
    for (;;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        int rc;

        if (n == 0 || n >= sizeof(name)) {
            snprintf(err, cap, "invalid TLS 1.3 cipher suite list \"%.200s\"", suites);
            return -EINVAL;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        rc = tls_try_policy("TLS 1.3 cipher suite", name, tls_set_ciphersuites, err, cap);
        if (rc < 0) {
            snprintf(err, cap,
                     "unknown TLS 1.3 cipher suite \"%.100s\" (known: TLS_AES_256_GCM_SHA384, "
                     "TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256, ...)",
                     name);
            return rc;
        }
        if (!colon)
            return 0;
        p = colon + 1;
    }
}

int tls_check_groups(const char *groups, char *err, size_t cap)
{
    return tls_try_policy("group list", groups, tls_set_groups, err, cap);
}

static int tls_request_client_certs(SSL_CTX *ctx, const struct tls_server_opts *o, char *err,
                                    size_t cap);

/* Applies the policy fields of o to a server context (and the certificate request). */
static int tls_server_policy(SSL_CTX *ctx, const struct tls_server_opts *o, char *err, size_t cap)
{
    int rc = 0;

    /* the checks run first so that a refused value is named in err */
    if (o->ciphers && ((rc = tls_check_ciphers(o->ciphers, err, cap)) < 0 ||
                       tls_set_cipher_list(ctx, o->ciphers) != 1))
        goto fail;
    if (o->ciphersuites && ((rc = tls_check_ciphersuites(o->ciphersuites, err, cap)) < 0 ||
                            SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1))
        goto fail;
    if (o->groups && ((rc = tls_check_groups(o->groups, err, cap)) < 0 ||
                      SSL_CTX_set1_groups_list(ctx, o->groups) != 1))
        goto fail;
    if (o->nrequest_cert_ca_files && (rc = tls_request_client_certs(ctx, o, err, cap)) < 0)
        goto fail;
    return 0;
fail:
    if (rc == 0)
        snprintf(err, cap, "could not apply the TLS policy");
    ERR_clear_error();
    return rc < 0 ? rc : -EINVAL;
}

/* Accepts any certificate during the handshake: SSL_get_verify_result() keeps the (failed)
 * result against the context's empty store, so conn_tls_peer_cn() never trusts it; the real
 * check is tls_verify_client_cert() against the right store once the purpose is known. */
static int tls_verify_later(int ok, X509_STORE_CTX *x)
{
    return 1;
}

static int tls_request_client_certs(SSL_CTX *ctx, const struct tls_server_opts *o, char *err,
                                    size_t cap)
{
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    char e[256];
    int rc = -EINVAL;

    if (!names) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < o->nrequest_cert_ca_files; i++) {
        const char *f = o->request_cert_ca_files[i];

        if (tls_check_readable("CA file", f, err, cap) < 0)
            goto out;
        ERR_clear_error();
        if (SSL_add_file_cert_subjects_to_stack(names, f) != 1) {
            snprintf(err, cap, "could not read CA names from \"%s\": %s", f,
                     tls_last_error(e, sizeof(e)));
            goto out;
        }
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    names = NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_later);
    rc = 0;
out:
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    return rc;
}

X509_STORE *tls_store_new(const char *ca_file, const char *crl_file, char *err, size_t cap)
{
    X509_STORE *store = NULL, *ret = NULL;
    X509_LOOKUP *lookup;
    char e[256];

    err[0] = '\0';
    if (!ca_file) {
        snprintf(err, cap, "a CA file is required");
        goto out;
    }
    if (tls_check_readable("CA file", ca_file, err, cap) < 0)
        goto out;
    if (crl_file && tls_check_readable("CRL file", crl_file, err, cap) < 0)
        goto out;
    ERR_clear_error();
    if (!(store = X509_STORE_new()) ||
        !(lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file()))) {
        snprintf(err, cap, "out of memory");
        goto out;
    }
    if (X509_load_cert_file(lookup, ca_file, X509_FILETYPE_PEM) <= 0) {
        snprintf(err, cap, "could not load CA file \"%s\": %s", ca_file,
                 tls_last_error(e, sizeof(e)));
        goto out;
    }
    if (crl_file) {
        if (X509_load_crl_file(lookup, crl_file, X509_FILETYPE_PEM) <= 0) {
            snprintf(err, cap, "could not load CRL file \"%s\": %s", crl_file,
                     tls_last_error(e, sizeof(e)));
            goto out;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    ret = store;
    store = NULL;
out:
    X509_STORE_free(store);
    ERR_clear_error();
    return ret;
}

/* RFC 4514 text of a name, with blanks and non-printable bytes escaped as \XX so that it is
 * one word in a log line and still a valid distinguished name. */
static void tls_name_text(X509_NAME *name, char *buf, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *p = NULL;
    long n = 0;
    size_t o = 0;

    buf[0] = '\0';
    if (!bio)
        return;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0)
        n = BIO_get_mem_data(bio, &p);
    for (long i = 0; i < n && o + 4 < cap; i++) {
        unsigned char ch = (unsigned char)p[i];

        if (ch == '\\' && i + 1 < n && p[i + 1] == ' ')
            continue; /* "\ " (an escaped edge blank) becomes "\20" below */
        if (ch <= ' ' || ch >= 0x7f) {
            snprintf(buf + o, cap - o, "\\%02X", ch);
            o += 3;
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o] = '\0';
    BIO_free(bio);
}

/* The earliest notAfter of a verified chain (seconds since the epoch; 0 when unreadable): when
 * the first of them expires, the chain no longer verifies. */
static long long tls_chain_not_after(STACK_OF(X509) * chain)
{
    long long first = 0;

    for (int i = 0; chain && i < sk_X509_num(chain); i++) {
        const ASN1_TIME *t = X509_get0_notAfter(sk_X509_value(chain, i));
        struct tm tm;
        long long s;

        if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
            continue;
        s = (long long)timegm(&tm);
        if (first == 0 || s < first)
            first = s;
    }
    return first;
}

int tls_verify_client_cert(X509 *leaf, STACK_OF(X509) * chain, X509_STORE *store,
                           struct tls_peer_info *info, char *err, size_t cap)
{
    X509_STORE_CTX *x = NULL;
    BIGNUM *bn = NULL;
    char *hex = NULL;
    int rc = -ENOMEM, vr;

    memset(info, 0, sizeof(*info));
    err[0] = '\0';
    if (!leaf || !store) {
        snprintf(err, cap, "no certificate");
        return -EINVAL;
    }
    ERR_clear_error();
    if (!(x = X509_STORE_CTX_new()) || X509_STORE_CTX_init(x, store, leaf, chain) != 1) {
        snprintf(err, cap, "out of memory");
        goto out;
    }
    /* what OpenSSL checks when it verifies a client during the handshake */
    X509_STORE_CTX_set_default(x, "ssl_client");
    vr = X509_verify_cert(x);
    if (vr != 1) {
        int e = X509_STORE_CTX_get_error(x);

        snprintf(err, cap, "%s%s", X509_verify_cert_error_string(e),
                 e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                         e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
                         e == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
                     ? " (not issued by the expected CA)"
                     : "");
        rc = -EACCES;
        goto out;
    }
    if (tls_cert_common_name(leaf, info->cn, sizeof(info->cn)) == -EINVAL) {
        snprintf(err, cap, "the certificate subject has several or unusable CNs");
        rc = -EACCES;
        goto out;
    }
    tls_name_text(X509_get_subject_name(leaf), info->subject, sizeof(info->subject));
    if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL)) && (hex = BN_bn2hex(bn)))
        snprintf(info->serial, sizeof(info->serial), "%s", hex);
    {
        char name[256], why[PGB_ERR_MAX];

        info->agent_mark =
            tls_cert_agent_name(leaf, name, sizeof(name), why, sizeof(why)) != -ENOENT;
    }
    info->not_after = tls_chain_not_after(X509_STORE_CTX_get0_chain(x));
    rc = 0;
out:
    OPENSSL_free(hex);
    BN_free(bn);
    X509_STORE_CTX_free(x);
    ERR_clear_error();
    return rc;
}
