/*
 * http.c: HTTP header lists and the forwarding rules (fanoutd(8), DESCRIPTION).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "util.h"

static int	http_client_deadline_ms(const struct http_headers *, uint64_t *);

/* With their lengths: a name of another length is told apart at once. */
#define HOP(s)	{ s, sizeof(s) - 1 }
static const struct {
	const char	*name;
	size_t		 len;
} hop_by_hop[] = {
	HOP("connection"), HOP("keep-alive"), HOP("te"), HOP("trailer"),
	HOP("transfer-encoding"), HOP("upgrade"), HOP("proxy-authorization"),
	HOP("proxy-connection")
};
#undef HOP

/*
 * A list's first chunk holds its first HTTP_FIRST_N entries and the strings
 * of a usual head in just under 1 KiB: glibc serves that from its thread
 * cache or a small bin. From 1 KiB on a request is a large one, which first
 * consolidates the arena's fast bins when its cache is empty.
 */
#define HTTP_FIRST_SIZE	1000
#define HTTP_FIRST_N	12
#define HTTP_CHUNK_SIZE	2048

struct http_chunk {
	struct http_chunk	*next;
	size_t			 used;
	size_t			 cap;
	char			 data[];
};

void
http_headers_init(struct http_headers *h)
{
	memset(h, 0, sizeof *h);
}

void
http_headers_clear(struct http_headers *h)
{
	struct http_chunk	*c;

	if (!h->v_in_chunk)
		free(h->v);
	while ((c = h->chunks) != NULL) {
		h->chunks = c->next;
		free(c);
	}
	memset(h, 0, sizeof *h);
}

/* len bytes of string space that lives as long as the list. */
static char *
http_headers_space(struct http_headers *h, size_t len)
{
	struct http_chunk	*c = h->chunks;
	size_t			 cap;
	char			*p;

	if (c == NULL || c->cap - c->used < len) {
		cap = (h->chunks == NULL ? HTTP_FIRST_SIZE : HTTP_CHUNK_SIZE) -
		    sizeof *c;
		if (len > cap)
			cap = len;
		if ((c = malloc(sizeof *c + cap)) == NULL)
			return (NULL);
		c->used = 0;
		c->cap = cap;
		c->next = h->chunks;
		h->chunks = c;
	}
	p = c->data + c->used;
	c->used += len;
	return (p);
}

int
http_headers_add(struct http_headers *h, const char *name, size_t namelen,
    const char *value, size_t valuelen)
{
	struct http_header	*nv, *e;
	size_t			 ncap;
	char			*p;

	if (h->cap == 0 && h->chunks == NULL) {
		/* The first entries and the first strings: one block. */
		if ((nv = (struct http_header *)http_headers_space(h,
		    HTTP_FIRST_N * sizeof *nv)) == NULL)
			return (-1);
		h->v = nv;
		h->cap = HTTP_FIRST_N;
		h->v_in_chunk = 1;
	} else if (h->n == h->cap) {
		ncap = h->cap * 2;
		if (h->v_in_chunk) {
			if ((nv = reallocarray(NULL, ncap, sizeof *nv)) == NULL)
				return (-1);
			memcpy(nv, h->v, h->n * sizeof *nv);
			h->v_in_chunk = 0;
		} else if ((nv = reallocarray(h->v, ncap, sizeof *nv)) == NULL)
			return (-1);
		h->v = nv;
		h->cap = ncap;
	}
	if (namelen > SIZE_MAX / 2 - 2 || valuelen > SIZE_MAX / 2 ||
	    (p = http_headers_space(h, namelen + valuelen + 2)) == NULL)
		return (-1);
	e = &h->v[h->n];
	e->name = p;
	memcpy(p, name, namelen);
	p[namelen] = '\0';
	e->value = p + namelen + 1;
	memcpy(e->value, value, valuelen);
	e->value[valuelen] = '\0';
	e->namelen = namelen;
	e->valuelen = valuelen;
	if (strn_eq_ci(name, namelen, "connection"))
		h->connection = 1;
	h->bytes += namelen + valuelen;
	h->n++;
	return (0);
}

const struct http_header *
http_headers_get(const struct http_headers *h, const char *name)
{
	size_t	i, len = strlen(name);

	for (i = 0; i < h->n; i++) {
		if (h->v[i].namelen == len &&
		    strncasecmp(h->v[i].name, name, len) == 0)
			return (&h->v[i]);
	}
	return (NULL);
}

/* 1 if the comma-separated token list v contains name (any case). */
static int
token_list_has(const char *v, size_t vlen, const char *name, size_t namelen)
{
	size_t	i = 0, start, end;

	while (i < vlen) {
		while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		start = i;
		while (i < vlen && v[i] != ',')
			i++;
		end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		if (end - start == namelen &&
		    strncasecmp(v + start, name, namelen) == 0)
			return (1);
	}
	return (0);
}

int
http_is_hop_by_hop(const struct http_headers *msg, const char *name,
    size_t namelen)
{
	size_t	i;

	for (i = 0; i < sizeof hop_by_hop / sizeof hop_by_hop[0]; i++) {
		if (namelen == hop_by_hop[i].len &&
		    strncasecmp(name, hop_by_hop[i].name, namelen) == 0)
			return (1);
	}
	/* The fields a Connection field names: most messages have none. */
	for (i = 0; msg != NULL && msg->connection && i < msg->n; i++) {
		if (strn_eq_ci(msg->v[i].name, msg->v[i].namelen, "connection") &&
		    token_list_has(msg->v[i].value, msg->v[i].valuelen, name,
		    namelen))
			return (1);
	}
	return (0);
}

int
http_forward_request_headers(const struct http_headers *in,
    const struct forward_info *fi, struct http_headers *out)
{
	const struct http_header	*h;
	char				*buf, num[32], small[128];
	size_t				 i, n, need;
	int				 rv;

	for (i = 0; i < in->n; i++) {
		h = &in->v[i];
		if (http_is_hop_by_hop(in, h->name, h->namelen) ||
		    strn_eq_ci(h->name, h->namelen, "host") ||
		    strn_eq_ci(h->name, h->namelen, "x-forwarded-for") ||
		    strn_eq_ci(h->name, h->namelen, "x-forwarded-host") ||
		    strn_eq_ci(h->name, h->namelen, "x-forwarded-proto") ||
		    strn_eq_ci(h->name, h->namelen, "x-request-id") ||
		    strn_eq_ci(h->name, h->namelen, "x-request-deadline-ms") ||
		    strn_eq_ci(h->name, h->namelen, "grpc-timeout") ||
		    strn_eq_ci(h->name, h->namelen, "content-length") ||
		    strn_eq_ci(h->name, h->namelen, "expect"))
			continue;
		if (http_headers_add(out, h->name, h->namelen, h->value,
		    h->valuelen) == -1)
			return (-1);
	}

	if ((h = http_headers_get(in, "host")) != NULL &&
	    http_headers_add(out, "X-Forwarded-Host", 16, h->value,
	    h->valuelen) == -1)
		return (-1);

	/* Several X-Forwarded-For lines are one list (RFC 9110 5.3). */
	need = strlen(fi->client_addr) + 1;
	for (i = 0; i < in->n; i++) {
		if (strn_eq_ci(in->v[i].name, in->v[i].namelen,
		    "x-forwarded-for"))
			need += in->v[i].valuelen + 2;
	}
	if (need <= sizeof small)
		buf = small;
	else if ((buf = malloc(need)) == NULL)
		return (-1);
	n = 0;
	for (i = 0; i < in->n; i++) {
		h = &in->v[i];
		if (!strn_eq_ci(h->name, h->namelen, "x-forwarded-for") ||
		    h->valuelen == 0)
			continue;
		if (n > 0) {
			memcpy(buf + n, ", ", 2);
			n += 2;
		}
		memcpy(buf + n, h->value, h->valuelen);
		n += h->valuelen;
	}
	if (n > 0) {
		memcpy(buf + n, ", ", 2);
		n += 2;
	}
	memcpy(buf + n, fi->client_addr, strlen(fi->client_addr));
	n += strlen(fi->client_addr);
	rv = http_headers_add(out, "X-Forwarded-For", 15, buf, n);
	if (buf != small)
		free(buf);
	if (rv == -1)
		return (-1);
	if (http_headers_add(out, "X-Forwarded-Proto", 17, fi->proto,
	    strlen(fi->proto)) == -1 ||
	    http_headers_add(out, "X-Request-Id", 12, fi->request_id,
	    strlen(fi->request_id)) == -1)
		return (-1);
	if (http_headers_add(out, "X-Request-Deadline-Ms", 21, num,
	    fmt_u64(num, fi->deadline_left_ms)) == -1)
		return (-1);
	/* TE is hop-by-hop, but "trailers" is the one value HTTP/2 allows:
	 * the upstream may send trailers when the client takes them, and a
	 * gRPC server wants it on every call (fanoutd reads grpc-status from
	 * the trailers even when it cannot pass them on). */
	if ((fi->trailers || fi->grpc) &&
	    http_headers_add(out, "TE", 2, "trailers", 8) == -1)
		return (-1);
	/* A gRPC caller's budget goes on shrunk, in its own spelling too;
	 * a gRPC call without one gets the route's. */
	if (fi->grpc || http_headers_get(in, "grpc-timeout") != NULL) {
		n = fmt_u64(num, fi->deadline_left_ms);
		num[n++] = 'm';
		if (http_headers_add(out, "grpc-timeout", 12, num, n) == -1)
			return (-1);
	}
	return (0);
}

int
http_te_trailers(const struct http_headers *msg)
{
	const struct http_header	*h;
	const char			*p, *end, *tok;
	size_t				 i, len;

	for (i = 0; i < msg->n; i++) {
		h = &msg->v[i];
		if (!strn_eq_ci(h->name, h->namelen, "te"))
			continue;
		/* #t-codings: "trailers, deflate;q=0.5" */
		p = h->value;
		end = h->value + h->valuelen;
		while (p < end) {
			while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
				p++;
			tok = p;
			while (p < end && *p != ',' && *p != ';' && *p != ' ' &&
			    *p != '\t')
				p++;
			len = (size_t)(p - tok);
			if (len > 0 && strn_eq_ci(tok, len, "trailers"))
				return (1);
			while (p < end && *p != ',')
				p++;
		}
	}
	return (0);
}

int
http_is_grpc_type(const char *v, size_t len)
{
	return (len >= 16 && strncasecmp(v, "application/grpc", 16) == 0 &&
	    (len == 16 || v[16] == '+' || v[16] == ';'));
}

int
http_response_header_passes(const struct http_headers *msg, const char *name,
    size_t namelen)
{
	if (http_is_hop_by_hop(msg, name, namelen))
		return (0);
	return (!strn_eq_ci(name, namelen, "content-length") &&
	    !strn_eq_ci(name, namelen, "x-request-id") &&
	    !strn_eq_ci(name, namelen, "date"));
}

/* tchar of RFC 9110, 5.6.2, by byte. */
static const unsigned char token_chars[256] = {
	['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1,
};

int
http_token_char(unsigned char ch)
{
	return (token_chars[ch]);
}

int
http_field_name_ok(const char *s, size_t len)
{
	return (len > 0 && http_token_len(s, len) == len);
}

size_t
http_token_len(const char *s, size_t len)
{
	size_t	i;

	for (i = 0; i < len && token_chars[(unsigned char)s[i]]; i++)
		;
	return (i);
}

int
http_field_value_ok(const char *s, size_t len)
{
	unsigned char	ch;
	size_t		i;

	for (i = 0; i < len; i++) {
		ch = (unsigned char)s[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return (0);
	}
	return (1);
}

int
http_host_valid(const char *s, size_t len)
{
	size_t	i = 0, end;

	if (len == 0)
		return (1);
	if (s[0] == '[') {
		/* IP-literal: hex digits, colons and dots (and a zone or
		 * IPvFuture would be refused here, deliberately). */
		for (i = 1; i < len && s[i] != ']'; i++) {
			if (!((s[i] >= '0' && s[i] <= '9') ||
			    (s[i] >= 'a' && s[i] <= 'f') ||
			    (s[i] >= 'A' && s[i] <= 'F') || s[i] == ':' ||
			    s[i] == '.'))
				return (0);
		}
		if (i == len || i == 1)
			return (0);
		i++;
	} else {
		for (; i < len && s[i] != ':'; i++) {
			if (!((s[i] >= 'a' && s[i] <= 'z') ||
			    (s[i] >= 'A' && s[i] <= 'Z') ||
			    (s[i] >= '0' && s[i] <= '9') ||
			    strchr("-._~%!$&'()*+,;=", s[i]) != NULL) ||
			    s[i] == '\0')
				return (0);
		}
		if (i == 0)
			return (0);
	}
	if (i == len)
		return (1);
	if (s[i] != ':')
		return (0);
	for (end = ++i; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (0);
	}
	return (i - end <= 5);
}

/*
 * gRPC's "grpc-timeout": at most 8 digits and a unit, H M S m u n. Times
 * under a millisecond round up, so that a budget is never made zero.
 */
int
http_grpc_timeout(const char *v, size_t len, uint64_t *ms)
{
	uint64_t	n;

	if (len < 2 || len > 9 || parse_u64(v, len - 1, 99999999, &n) != 0)
		return (0);
	switch (v[len - 1]) {
	case 'H':	*ms = n * 3600 * 1000; break;
	case 'M':	*ms = n * 60 * 1000; break;
	case 'S':	*ms = n * 1000; break;
	case 'm':	*ms = n; break;
	case 'u':	*ms = (n + 999) / 1000; break;
	case 'n':	*ms = (n + 999999) / 1000000; break;
	default:	return (0);
	}
	return (1);
}

int
http_client_deadline(const struct http_headers *h, uint64_t *ms)
{
	const struct http_header	*g;
	uint64_t			 gms;
	int				 found;

	found = http_client_deadline_ms(h, ms);
	if ((g = http_headers_get(h, "grpc-timeout")) != NULL &&
	    http_grpc_timeout(g->value, g->valuelen, &gms) &&
	    (!found || gms < *ms)) {
		*ms = gms;
		found = 1;
	}
	return (found);
}

static int
http_client_deadline_ms(const struct http_headers *h, uint64_t *ms)
{
	const struct http_header	*d;

	if ((d = http_headers_get(h, "x-request-deadline-ms")) == NULL)
		return (0);
	return (parse_u64(d->value, d->valuelen, UINT64_MAX / 1000, ms) == 0);
}
