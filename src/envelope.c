/*
 * envelope.c: the JSON envelope (see envelope.h).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "config.h"
#include "envelope.h"
#include "leg.h"
#include "util.h"

int
envelope_is_json_type(const char *ct, size_t len)
{
	size_t	end = 0;

	if (ct == NULL)
		return (0);
	while (end < len && ct[end] != ';' && ct[end] != ' ' && ct[end] != '\t')
		end++;
	if (end == 16 && strncasecmp(ct, "application/json", 16) == 0)
		return (1);
	return (end > 5 && strncasecmp(ct + end - 5, "+json", 5) == 0 &&
	    memchr(ct, '/', end) != NULL);
}

/*
 * The length of the UTF-8 sequence at p (n > 0 bytes left), or 0 when it
 * is none: a stray continuation byte, an overlong form, a surrogate, a
 * code point above U+10FFFF or a truncated sequence. The second byte's
 * range carries all but the first of those (Unicode 15, table 3-7).
 */
static size_t
utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char	c = p[0], lo = 0x80, hi = 0xbf;
	size_t		len, i;

	if (c < 0x80)
		return (1);
	if (c < 0xc2)		/* continuation byte, or overlong for < 0x80 */
		return (0);
	if (c < 0xe0)
		len = 2;
	else if (c < 0xf0) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;	/* overlong for < U+0800 */
		else if (c == 0xed)
			hi = 0x9f;	/* U+D800..U+DFFF */
	} else if (c < 0xf5) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;	/* overlong for < U+10000 */
		else if (c == 0xf4)
			hi = 0x8f;	/* above U+10FFFF */
	} else
		return (0);
	if (n < len || p[1] < lo || p[1] > hi)
		return (0);
	for (i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return (0);
	return (len);
}

int
envelope_is_text(const unsigned char *p, size_t len)
{
	const unsigned char	*end = p + len;
	size_t			 n;

	while (p < end) {
		if (*p >= 0x01 && *p < 0x80) {
			p++;
			continue;
		}
		if (*p == '\0' || (n = utf8_seq(p, end - p)) == 0)
			return (0);
		p += n;
	}
	return (1);
}

static const unsigned char *
json_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return (p);
}

/* The 4 hex digits at p as a number, or -1. */
static long
json_hex4(const unsigned char *p, const unsigned char *end)
{
	long	v = 0;
	int	i, d;

	if (end - p < 4)
		return (-1);
	for (i = 0; i < 4; i++) {
		if (p[i] >= '0' && p[i] <= '9')
			d = p[i] - '0';
		else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f')
			d = (p[i] | 0x20) - 'a' + 10;
		else
			return (-1);
		v = v << 4 | d;
	}
	return (v);
}

/*
 * Past the string whose opening quote is at p, or NULL. \u0000 is fine
 * (jansson's JSON_ALLOW_NUL, which the envelope used): it stays escaped.
 */
static const unsigned char *
json_string(const unsigned char *p, const unsigned char *end)
{
	long	u;
	size_t	n;

	for (p++; p < end; ) {
		if (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
			p++;
			continue;
		}
		if (*p == '"')
			return (p + 1);
		if (*p == '\\') {
			if (++p == end)
				return (NULL);
			if (*p != 'u') {
				if (strchr("\"\\/bfnrt", *p) == NULL || *p == '\0')
					return (NULL);
				p++;
				continue;
			}
			if ((u = json_hex4(p + 1, end)) == -1)
				return (NULL);
			p += 5;
			if (u >= 0xdc00 && u <= 0xdfff)
				return (NULL);	/* a low surrogate first */
			if (u >= 0xd800 && u <= 0xdbff) {
				/* A high surrogate: its low one must follow. */
				if (end - p < 2 || p[0] != '\\' || p[1] != 'u' ||
				    (u = json_hex4(p + 2, end)) < 0xdc00 ||
				    u > 0xdfff)
					return (NULL);
				p += 6;
			}
			continue;
		}
		if (*p < 0x20 || (n = utf8_seq(p, end - p)) == 0)
			return (NULL);
		p += n;
	}
	return (NULL);
}

/*
 * Past the number at p, or NULL (RFC 8259, 6). Its value is not looked
 * at: any length or exponent is JSON, and is copied as it is.
 */
static const unsigned char *
json_number(const unsigned char *p, const unsigned char *end)
{
#define DIGIT(q)	((q) < end && *(q) >= '0' && *(q) <= '9')
	if (p < end && *p == '-')
		p++;
	if (!DIGIT(p))
		return (NULL);
	if (*p++ != '0')	/* no leading zeros: "0" stands alone */
		while (DIGIT(p))
			p++;
	if (p < end && *p == '.') {
		p++;
		if (!DIGIT(p))
			return (NULL);
		while (DIGIT(p))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!DIGIT(p))
			return (NULL);
		while (DIGIT(p))
			p++;
	}
	return (p);
#undef DIGIT
}

/* Past an object's key and its colon, at p after whitespace; or NULL. */
static const unsigned char *
json_key(const unsigned char *p, const unsigned char *end)
{
	p = json_ws(p, end);
	if (p == end || *p != '"' || (p = json_string(p, end)) == NULL)
		return (NULL);
	p = json_ws(p, end);
	return (p < end && *p == ':' ? p + 1 : NULL);
}

/*
 * One loop rather than recursion, so that input cannot grow the C stack:
 * the open containers are a stack of bits (1: object). A value may start
 * only inside fewer than JSON_DEPTH_MAX containers: jansson counts every
 * value, a scalar too, so 2048 nested arrays are JSON to it but a number
 * inside them is not, and neither is here.
 */
#define JSON_DEPTH_MAX	2048

int
envelope_json_valid(const unsigned char *p, size_t len)
{
	const unsigned char	*end = p + len;
	unsigned char		 obj[JSON_DEPTH_MAX / 8];
	size_t			 depth = 0;
	int			 isobj;

	for (;;) {
		/* A value. */
		p = json_ws(p, end);
		if (p == end || depth == JSON_DEPTH_MAX)
			return (0);
		switch (*p) {
		case '{':
		case '[':
			isobj = *p == '{';
			if (isobj)
				obj[depth / 8] |= 1 << depth % 8;
			else
				obj[depth / 8] &= ~(1 << depth % 8);
			depth++;
			p = json_ws(p + 1, end);
			if (p < end && *p == (isobj ? '}' : ']')) {
				p++;
				depth--;
				break;
			}
			if (isobj && (p = json_key(p, end)) == NULL)
				return (0);
			continue;
		case '"':
			p = json_string(p, end);
			break;
		case 't':
		case 'f':
		case 'n':
			len = *p == 'f' ? 5 : 4;
			if ((size_t)(end - p) < len || memcmp(p, *p == 't' ?
			    "true" : *p == 'f' ? "false" : "null", len) != 0)
				return (0);
			p += len;
			break;
		default:
			p = json_number(p, end);
		}
		if (p == NULL)
			return (0);

		/* After a value: the containers it closes, then a comma. */
		for (;;) {
			p = json_ws(p, end);
			if (depth == 0)
				return (p == end);
			if (p == end)
				return (0);
			isobj = obj[(depth - 1) / 8] >> (depth - 1) % 8 & 1;
			if (*p == (isobj ? '}' : ']')) {
				p++;
				depth--;
				continue;
			}
			if (*p != ',')
				return (0);
			p++;
			if (isobj && (p = json_key(p, end)) == NULL)
				return (0);
			break;
		}
	}
}

/* Standard base64 with padding of len bytes, (len + 2) / 3 * 4 at out. */
static void
base64_encode(char *out, const unsigned char *in, size_t len)
{
	static const char	 tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t			 i;
	unsigned		 v;

	for (i = 0; i + 2 < len; i += 3) {
		v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = tab[v & 63];
	}
	if (i < len) {
		v = in[i] << 16 | (i + 1 < len ? in[i + 1] << 8 : 0);
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		*out++ = '=';
	}
}

char *
envelope_base64(const unsigned char *in, size_t len)
{
	char	*out;
	size_t	 n;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return (NULL);
	n = (len + 2) / 3 * 4;
	if ((out = malloc(n + 1)) == NULL)
		return (NULL);
	base64_encode(out, in, len);
	out[n] = '\0';
	return (out);
}

int
envelope_add_body(struct evbuffer *out, const char *ctype, size_t ctlen,
    const unsigned char *body, size_t len)
{
	struct evbuffer_iovec	 v;
	const unsigned char	*end = body + len;
	size_t			 n;

	/*
	 * Valid JSON goes in as it came, less the whitespace around it. It
	 * used to be parsed by jansson and written back: numbers jansson
	 * cannot hold (1e400, a 30-digit integer) and "\u0000" in a key
	 * made it a string then, and of duplicate keys only the last was
	 * kept; all are JSON (RFC 8259), and are now copied as they are.
	 * jansson also skipped a raw NUL byte right after a number or a
	 * literal ("1\0"); that is not JSON, and such a body is now base64.
	 */
	if (envelope_is_json_type(ctype, ctlen) &&
	    envelope_json_valid(body, len)) {
		body = json_ws(body, end);
		while (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\r' ||
		    end[-1] == '\t')
			end--;
		if (evbuffer_add(out, "\"body\":", 7) == -1 ||
		    evbuffer_add(out, body, end - body) == -1)
			return (-1);
		return (0);
	}
	if (envelope_is_text(body, len)) {
		if (evbuffer_add(out, "\"body\":", 7) == -1)
			return (-1);
		return (json_append_string(out, (const char *)body, len));
	}
	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return (-1);
	n = (len + 2) / 3 * 4;
	if (evbuffer_add(out, "\"body_base64\":\"", 15) == -1 ||
	    evbuffer_reserve_space(out, n + 1, &v, 1) < 1)
		return (-1);
	base64_encode(v.iov_base, body, len);
	((char *)v.iov_base)[n] = '"';
	v.iov_len = n + 1;
	return (evbuffer_commit_space(out, &v, 1));
}

/* Literal JSON text, s a string constant. */
#define ADD(out, s)	evbuffer_add((out), (s), sizeof(s) - 1)

/* An int in decimal, as jansson's json_integer() printed it. */
static int
add_int(struct evbuffer *out, int v)
{
	char	buf[22];

	if (v >= 0)
		return (evbuffer_add(out, buf, fmt_u64(buf, v)));
	buf[0] = '-';
	return (evbuffer_add(out, buf, 1 + fmt_u64(buf + 1, -(uint64_t)v)));
}

/* ",\"reason\":" and s as a JSON string. */
static int
add_reason(struct evbuffer *out, const char *s)
{
	if (ADD(out, ",\"reason\":") == -1)
		return (-1);
	return (json_append_string(out, s, strlen(s)));
}

/*
 * The members of one leg's object, in the order jansson was handed them
 * before: error, status, reason, then the body. l NULL: a route upstream
 * that got no leg.
 */
static int
envelope_leg(struct evbuffer *out, const struct leg *l)
{
	const struct http_header	*ct;
	const unsigned char		*body;
	const char			*name;
	size_t				 len;

	if (l == NULL || l->state != LEG_DONE) {
		/* Never sent (no leg, a hedge not needed), or still running
		 * when it was decided. */
		return (l == NULL || l->state == LEG_IDLE ?
		    ADD(out, "\"error\":\"cancelled\",\"reason\":\"not_sent\"") :
		    ADD(out, "\"error\":\"cancelled\",\"reason\":\"superseded\""));
	}
	switch (l->outcome) {
	case LEG_OK:
	case LEG_STATUS:
		if (l->outcome == LEG_STATUS) {
			if (ADD(out, "\"error\":\"status\",\"status\":") == -1 ||
			    add_int(out, l->status) == -1 ||
			    ADD(out, ",\"reason\":\"HTTP ") == -1 ||
			    add_int(out, l->status) == -1 ||
			    ADD(out, "\",") == -1)
				return (-1);
		} else if (ADD(out, "\"status\":") == -1 ||
		    add_int(out, l->status) == -1 || ADD(out, ",") == -1)
			return (-1);
		len = l->body ? evbuffer_get_length(l->body) : 0;
		body = len ? evbuffer_pullup(l->body, -1) : (const unsigned char *)"";
		if (body == NULL)
			return (-1);
		ct = http_headers_get(&l->headers, "content-type");
		return (envelope_add_body(out, ct ? ct->value : NULL,
		    ct ? ct->valuelen : 0, body, len));
	case LEG_FAILED:
		name = transfer_error_name(l->error);
		if (ADD(out, "\"error\":") == -1 ||
		    json_append_string(out, name, strlen(name)) == -1)
			return (-1);
		return (add_reason(out, l->detail ? l->detail : ""));
	case LEG_CANCELLED:
		if (ADD(out, "\"error\":\"cancelled\"") == -1)
			return (-1);
		return (add_reason(out,
		    cancel_reason_name(cancel_reason_of(&l->cancel))));
	}
	return (-1);
}

/*
 * Written straight into the buffer, compact, as json_dump_callback() did
 * with JSON_COMPACT from a tree: the same JSON, but JSON bodies keep their
 * own spacing and numbers, and strings escape \b, \f and DEL as \u00XX
 * (json_append_string()). The space for the usual envelope (JSON or short
 * text bodies) is made first, in one allocation.
 */
struct evbuffer *
envelope_build(const struct route_conf *rt, const struct leg *legs,
    size_t nlegs)
{
	struct evbuffer		*out;
	const struct leg	*l;
	const char		*name;
	size_t			 i, j, size = 2;

	for (i = 0; i < nlegs; i++)
		size += 128 + (legs[i].body ?
		    evbuffer_get_length(legs[i].body) : 0);
	for (i = 0; i < rt->nupstreams; i++)
		size += 64 + strlen(rt->upstreams[i]->name);
	if ((out = evbuffer_new()) == NULL)
		return (NULL);
	if (evbuffer_expand(out, size) == -1)
		goto fail;
	/* Route order, whatever order the legs were sent in. */
	for (i = 0; i < rt->nupstreams; i++) {
		for (j = 0, l = NULL; j < nlegs && l == NULL; j++)
			if (legs[j].up == rt->upstreams[i])
				l = &legs[j];
		name = rt->upstreams[i]->name;
		if (evbuffer_add(out, i == 0 ? "{" : ",", 1) == -1 ||
		    json_append_string(out, name, strlen(name)) == -1 ||
		    ADD(out, ":{") == -1)
			goto fail;
		if (envelope_leg(out, l) == -1)
			goto fail;
		if (ADD(out, "}") == -1)
			goto fail;
	}
	if ((rt->nupstreams == 0 ? ADD(out, "{}\n") : ADD(out, "}\n")) == -1)
		goto fail;
	return (out);
fail:
	evbuffer_free(out);
	return (NULL);
}
