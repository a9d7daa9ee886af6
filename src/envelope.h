/*
 * envelope.h: the JSON envelope of fanoutd(8), MODES, written straight
 * into an evbuffer: one member per upstream of the route, in the route's
 * order, from the legs it is handed (it never sees the request). A JSON
 * body is checked, not parsed, and copied as it is.
 *
 *	{"users": {"status": 200, "body": {...}},
 *	 "orders": {"error": "timeout", "reason": "..."},
 *	 "recs": {"error": "cancelled", "reason": "superseded"}}
 */
#ifndef FANOUTD_ENVELOPE_H
#define FANOUTD_ENVELOPE_H

#include <stddef.h>

struct evbuffer;
struct leg;
struct route_conf;

/* 1 for application/json and any +json type (parameters ignored). */
int		 envelope_is_json_type(const char *ctype, size_t len);

/*
 * 1 when the len bytes at p are exactly one JSON value (RFC 8259, any type)
 * with optional whitespace around it; nesting deeper than jansson allows
 * (2048 values) is not JSON here either.
 */
int		 envelope_json_valid(const unsigned char *p, size_t len);

/* 1 when the len bytes at p are UTF-8 without NUL bytes. */
int		 envelope_is_text(const unsigned char *p, size_t len);

/*
 * Append a response body as one member of an object, without a comma:
 * "body":<the JSON, as it is> when the type says JSON and it is valid,
 * else "body":"<string>" when it is UTF-8 text without NUL bytes, else
 * "body_base64":"...". 0 / -1 (out of memory).
 */
int		 envelope_add_body(struct evbuffer *out, const char *ctype,
		    size_t ctlen, const unsigned char *body, size_t len);

/* Standard base64 with padding; a NUL-terminated malloc'd string. */
char		*envelope_base64(const unsigned char *, size_t);

/*
 * The whole envelope of nlegs legs sent for route rt, in the route's order
 * (an upstream without a leg, or whose leg was never sent: "not_sent"),
 * with a final newline. NULL when out of memory.
 */
struct evbuffer	*envelope_build(const struct route_conf *rt,
		    const struct leg *legs, size_t nlegs);

#endif
