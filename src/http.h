/*
 * http.h: HTTP header lists and the forwarding rules (fanoutd(8),
 * DESCRIPTION).
 * Pure functions over memory; no I/O.
 */
#ifndef FANOUTD_HTTP_H
#define FANOUTD_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct http_header {
	char	*name;
	size_t	 namelen;
	char	*value;
	size_t	 valuelen;
};

struct http_chunk;

/* Names and values live in a few chunks owned by the list, not in a
 * malloc'd string each; the first chunk begins with room for the first
 * entries too, so a head of up to 16 fields costs one allocation. */
struct http_headers {
	struct http_header	*v;
	size_t			 n;
	size_t			 cap;
	int			 v_in_chunk;	/* v is the first chunk's */
	size_t			 bytes;	/* names and values, for limits */
	struct http_chunk	*chunks;
	int			 connection;	/* has a Connection field */
};

void	 http_headers_init(struct http_headers *);
void	 http_headers_clear(struct http_headers *);
/* Copies name and value. 0 / -1 (out of memory). */
int	 http_headers_add(struct http_headers *, const char *name,
	    size_t namelen, const char *value, size_t valuelen);
/* The first header of that name, or NULL. */
const struct http_header *http_headers_get(const struct http_headers *,
	    const char *name);

/*
 * 1 if the header must not cross the proxy: the hop-by-hop headers of
 * RFC 9110 7.6.1 (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding,
 * Upgrade, Proxy-Authorization, Proxy-Connection) and any header named in
 * a Connection header of the same message.
 */
int	 http_is_hop_by_hop(const struct http_headers *msg, const char *name,
	    size_t namelen);

/* What the proxy adds to every upstream request. */
struct forward_info {
	const char	*client_addr;	/* "127.0.0.1" */
	const char	*proto;		/* "http" */
	const char	*request_id;
	uint64_t	 deadline_left_ms;
	int		 trailers;	/* the client takes trailers: TE: trailers */
	int		 grpc;		/* a gRPC call: grpc-timeout always */
};

/*
 * The headers of an upstream request made from the client's: hop-by-hop
 * and Host dropped; Host's value moved to X-Forwarded-Host; X-Forwarded-For
 * extended with the client; X-Forwarded-Proto, X-Request-Id and
 * X-Request-Deadline-Ms set (replacing the client's). The upstream's own
 * Host is the transfer layer's business. 0 / -1.
 */
int	 http_forward_request_headers(const struct http_headers *in,
	    const struct forward_info *, struct http_headers *out);

/*
 * 1 if an upstream response header is passed to the client: not hop-by-hop,
 * and not one the proxy writes itself (Content-Length, X-Request-Id, Date).
 */
int	 http_response_header_passes(const struct http_headers *msg,
	    const char *name, size_t namelen);

/* RFC 9110 5.1, 5.5: a field name is a token; a value holds no control
 * characters but HTAB (so no CR, LF or NUL). */
int	 http_token_char(unsigned char);
int	 http_field_name_ok(const char *, size_t);
/* How many of the len bytes at s are token characters, from the first. */
size_t	 http_token_len(const char *s, size_t len);
int	 http_field_value_ok(const char *, size_t);

/*
 * 1 if a Host value is uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2):
 * a reg-name, an IPv4 address or an [IP-literal], then digits after a
 * colon. An empty value is allowed (a target without authority).
 */
int	 http_host_valid(const char *, size_t);

/*
 * The client's deadline, when it gave a usable one: the shorter of
 * X-Request-Deadline-Ms (a plain non-negative integer) and grpc-timeout.
 * 1 and *ms set; 0 when there is none.
 */
int	 http_client_deadline(const struct http_headers *, uint64_t *ms);
/* 1 when a TE field of msg lists "trailers" (RFC 9110 10.1.4). */
int	 http_te_trailers(const struct http_headers *msg);
/* 1 for a Content-Type of application/grpc or application/grpc+... */
int	 http_is_grpc_type(const char *, size_t);

/* A grpc-timeout value ("250m", "2S") in milliseconds: 1, or 0 if bad. */
int	 http_grpc_timeout(const char *, size_t, uint64_t *ms);

#endif
