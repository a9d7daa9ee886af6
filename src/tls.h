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
 * A server context for cert (PEM chain, leaf first) and key (PEM), offering
 * "h2" over ALPN when h2 is set, "http/1.1" always. NULL with the reason
 * in err on failure.
 */
struct ssl_ctx_st	*tls_ctx_new(const char *cert, const char *key, int h2,
			    char *err, size_t errlen);
void			 tls_ctx_free(struct ssl_ctx_st *);

/* The OpenSSL error queue's first reason, for logs; clears the queue. */
const char		*tls_error_text(char *, size_t);

#endif
