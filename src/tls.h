/*
 * tls.h: TLS contexts for the client listeners.
 *
 * A context is built from the configuration (certificate chain, key, the
 * ALPN protocols offered) when the configuration is loaded, so that a bad
 * certificate is a configuration error at start-up, at -t and at reload,
 * and a reload hands new connections a new certificate while connections
 * already open keep the one they were accepted with.
 */
#ifndef FANOUTD_TLS_H
#define FANOUTD_TLS_H

#include <stddef.h>

struct ssl_ctx_st;

/*
 * Mozilla's "intermediate" TLS 1.2 suites without the DHE ones, which would
 * need DH parameters of our own: ECDHE key exchange with an AEAD cipher
 * only, for ECDSA and RSA certificates alike. TLS 1.3 keeps OpenSSL's
 * suites, all of them AEAD.
 */
#define TLS_DEFAULT_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/*
 * A server context for cert (PEM chain, leaf first) and key (PEM), offering
 * "h2" over ALPN when h2 is set, "http/1.1" always; TLS 1.2 (unless tls13
 * is set) with the suites of ciphers (OpenSSL syntax, NULL for
 * TLS_DEFAULT_CIPHERS) and TLS 1.3. NULL with the reason in err on failure.
 */
struct ssl_ctx_st	*tls_ctx_new(const char *cert, const char *key, int h2,
			    const char *ciphers, int tls13, char *err,
			    size_t errlen);
/* 0 when OpenSSL takes ciphers as a TLS 1.2 cipher list, -1 if not. */
int			 tls_ciphers_check(const char *ciphers);
void			 tls_ctx_free(struct ssl_ctx_st *);

/* The OpenSSL error queue's first reason, for logs; clears the queue. */
const char		*tls_error_text(char *, size_t);

#endif
