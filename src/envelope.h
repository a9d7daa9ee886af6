/*
 * envelope.h: the JSON envelope of fanoutd(8), MODES, built with jansson:
 * one member per upstream of the route, in the route's order, from the legs
 * it is handed (it never sees the request).
 *
 *	{"users": {"status": 200, "body": {...}},
 *	 "orders": {"error": "timeout", "reason": "..."},
 *	 "recs": {"error": "cancelled", "reason": "superseded"}}
 */
#ifndef FANOUTD_ENVELOPE_H
#define FANOUTD_ENVELOPE_H

#include <stddef.h>

#include <jansson.h>

struct evbuffer;
struct leg;
struct route_conf;

/* 1 for application/json and any +json type (parameters ignored). */
int		 envelope_is_json_type(const char *ctype, size_t len);

/*
 * Add a response body to obj: as JSON when the type says JSON and it
 * parses, else as a string when it is UTF-8 text without NUL bytes, else
 * base64 in "body_base64". 0 / -1.
 */
int		 envelope_add_body(json_t *obj, const char *ctype, size_t ctlen,
		    const unsigned char *body, size_t len);

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
