/*
 * tls.c: TLS contexts: certificates and ALPN.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls.h"

/* ALPN wire format: length-prefixed names, in our order of preference. */
static const unsigned char alpn_h2[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_h1[] = "\x08http/1.1";

const char *
tls_error_text(char *buf, size_t len)
{
	unsigned long	e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return (buf);
}

/*
 * The server chooses: h2 when both sides speak it, else http/1.1. A client
 * that offers neither still gets a connection (HTTP/1.1), as a client that
 * sends no ALPN at all does.
 */
static int
tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	const unsigned char	*ours = arg;
	unsigned char		*sel;
	unsigned int		 ourslen;

	ourslen = ours == alpn_h2 ? sizeof alpn_h2 - 1 : sizeof alpn_h1 - 1;
	if (SSL_select_next_proto(&sel, outlen, ours, ourslen, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return (SSL_TLSEXT_ERR_NOACK);
	*out = sel;
	return (SSL_TLSEXT_ERR_OK);
}

/* A key with a passphrase would make OpenSSL ask on the terminal. */
static int
tls_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	*(int *)arg = 1;
	return (0);
}

/*
 * A scratch context: SSL_CTX_set_cipher_list fails only when no suite of
 * the string is known, which is the check that -t can make without a
 * certificate.
 */
int
tls_ciphers_check(const char *ciphers)
{
	SSL_CTX	*ctx;
	int	 rv = -1;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		goto done;
	if (SSL_CTX_set_cipher_list(ctx, ciphers) == 1)
		rv = 0;
	SSL_CTX_free(ctx);
done:
	ERR_clear_error();
	return (rv);
}

SSL_CTX *
tls_ctx_new(const char *cert, const char *key, int h2, const char *ciphers,
    int tls13, char *err, size_t errlen)
{
	SSL_CTX	*ctx;
	char	 why[256];
	int	 asked = 0;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "cannot create a TLS context: %s",
		    tls_error_text(why, sizeof why));
		return (NULL);
	}
	SSL_CTX_set_min_proto_version(ctx, tls13 ? TLS1_3_VERSION :
	    TLS1_2_VERSION);
	if (ciphers == NULL)
		ciphers = TLS_DEFAULT_CIPHERS;
	if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		snprintf(err, errlen, "bad tls_ciphers '%s': %s", ciphers,
		    tls_error_text(why, sizeof why));
		goto fail;
	}
	/* Renegotiation is a CPU lever for clients and HTTP/2 forbids it;
	 * idle connections give their buffers back. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ctx, tls_no_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(err, errlen, "cannot load tls_cert '%s': %s", cert,
		    tls_error_text(why, sizeof why));
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		if (asked) {
			snprintf(err, errlen, "tls_key '%s' is encrypted "
			    "(fanoutd takes keys without a passphrase)", key);
			ERR_clear_error();
		} else if (ERR_GET_REASON(ERR_peek_last_error()) ==
		    X509_R_KEY_VALUES_MISMATCH) {
			snprintf(err, errlen, "tls_key '%s' does not match "
			    "tls_cert '%s'", key, cert);
			ERR_clear_error();
		} else
			snprintf(err, errlen, "cannot load tls_key '%s': %s",
			    key, tls_error_text(why, sizeof why));
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "tls_key '%s' does not match tls_cert "
		    "'%s'", key, cert);
		ERR_clear_error();
		goto fail;
	}
	/* The callback's argument lives on this stack only. */
	SSL_CTX_set_default_passwd_cb(ctx, NULL);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select,
	    (void *)(h2 ? alpn_h2 : alpn_h1));
	return (ctx);
fail:
	SSL_CTX_free(ctx);
	return (NULL);
}

void
tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}
