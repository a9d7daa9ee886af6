/*
 * util.c: small helpers with no state of their own.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "util.h"

void *
zalloc(size_t n, size_t size)
{
	void	*p;

	if (size != 0 && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return (NULL);
	}
	if ((p = malloc(n * size)) == NULL)
		return (NULL);
	/* Keeps the compiler from folding the two back into calloc. */
	__asm__ volatile ("" : : "r" (p) : "memory");
	memset(p, 0, n * size);
	return (p);
}

uint64_t
now_us(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

uint64_t
now_ms(void)
{
	return (now_us() / 1000);
}

int
evtimer_add_ms(struct event *ev, uint64_t ms)
{
	/* Every caller's ms is a configured duration (a day at most) or
	 * less: in microseconds it is far from overflowing. */
	return (evtimer_add_us(ev, ms * 1000));
}

int
evtimer_add_us(struct event *ev, uint64_t us)
{
	struct timeval	tv;

	tv.tv_sec = us / 1000000;
	tv.tv_usec = us % 1000000;
	return (evtimer_add(ev, &tv));
}

int
lazy_timer_set(struct lazy_timer *t, uint64_t due, uint64_t now)
{
	t->due = due;
	if (t->armed != 0 && t->armed <= due)
		return (0);	/* fires sooner: lazy_timer_fired() re-arms */
	if (evtimer_add_us(t->ev, due > now ? due - now : 0) == -1)
		return (-1);
	t->armed = due;
	return (0);
}

void
lazy_timer_soon(struct lazy_timer *t, uint64_t now)
{
	t->due = now;
	if (t->armed != 0 && t->armed <= now)
		return;
	/* Pending for later or not: libevent takes it off its heap before
	 * the callback runs. */
	event_active(t->ev, EV_TIMEOUT, 1);
	t->armed = now;
}

void
lazy_timer_clear(struct lazy_timer *t)
{
	t->due = 0;
}

int
lazy_timer_fired(struct lazy_timer *t)
{
	uint64_t	now;

	t->armed = 0;
	if (t->due == 0)
		return (0);
	if ((now = now_us()) < t->due) {
		if (evtimer_add_us(t->ev, t->due - now) == 0)
			t->armed = t->due;
		return (0);
	}
	t->due = 0;
	return (1);
}

void
iso8601_now(char *buf, size_t len)
{
	struct timespec	ts;
	struct tm	tm;
	char		tmp[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03ldZ", tmp, ts.tv_nsec / 1000000);
}

size_t
http_date_now(char *buf)
{
	static _Thread_local time_t	cached_sec = -1;
	static _Thread_local char	cached[32];
	static _Thread_local size_t	cached_len;
	struct tm			tm;
	time_t				t = time(NULL);

	if (t != cached_sec) {
		gmtime_r(&t, &tm);
		cached_len = strftime(cached, sizeof cached,
		    "%a, %d %b %Y %H:%M:%S GMT", &tm);
		cached_sec = t;
	}
	memcpy(buf, cached, cached_len + 1);
	return (cached_len);
}

int
evbuffer_add_field(struct evbuffer *b, const char *name, size_t namelen,
    const char *value, size_t valuelen)
{
	struct evbuffer_iovec	v;
	size_t			n = namelen + valuelen + 4;
	char			*p;

	if (evbuffer_reserve_space(b, n, &v, 1) != 1)
		return (-1);
	p = v.iov_base;
	memcpy(p, name, namelen);
	p += namelen;
	*p++ = ':';
	*p++ = ' ';
	memcpy(p, value, valuelen);
	p += valuelen;
	*p++ = '\r';
	*p = '\n';
	v.iov_len = n;
	return (evbuffer_commit_space(b, &v, 1));
}

size_t
str_copy(char *dst, size_t size, const char *src, size_t len)
{
	if (len >= size)
		len = size - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
	return (len);
}

size_t
fmt_u64(char *buf, uint64_t v)
{
	char	digits[20], *p = digits + sizeof digits;
	size_t	n;

	do
		*--p = '0' + v % 10;
	while ((v /= 10) != 0);
	n = (size_t)(digits + sizeof digits - p);
	memcpy(buf, p, n);
	buf[n] = '\0';
	return (n);
}

int
evbuffer_add_u64(struct evbuffer *b, uint64_t v)
{
	char	buf[21];

	return (evbuffer_add(b, buf, fmt_u64(buf, v)));
}

int
json_append_string(struct evbuffer *out, const char *s, size_t len)
{
	static const char	 hex[] = "0123456789abcdef";
	size_t			 i, run = 0;
	unsigned char		 c;
	char			 esc[6];
	int			 rv;

	rv = evbuffer_add(out, "\"", 1);
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
			continue;
		rv |= evbuffer_add(out, s + run, i - run);
		run = i + 1;
		esc[0] = '\\';
		switch (c) {
		case '"':  rv |= evbuffer_add(out, "\\\"", 2); break;
		case '\\': rv |= evbuffer_add(out, "\\\\", 2); break;
		case '\n': rv |= evbuffer_add(out, "\\n", 2); break;
		case '\r': rv |= evbuffer_add(out, "\\r", 2); break;
		case '\t': rv |= evbuffer_add(out, "\\t", 2); break;
		default:
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 0xf];
			rv |= evbuffer_add(out, esc, 6);
		}
	}
	rv |= evbuffer_add(out, s + run, len - run);
	rv |= evbuffer_add(out, "\"", 1);
	return (rv == 0 ? 0 : -1);
}

static uint64_t	id_prefix;

static void
request_id_seed(void)
{
	if (getrandom(&id_prefix, sizeof id_prefix, 0) != sizeof id_prefix)
		id_prefix = (uint64_t)time(NULL) << 20;
}

void
request_id_new(char *buf, size_t len)
{
	static pthread_once_t		 once = PTHREAD_ONCE_INIT;
	static atomic_uint_fast64_t	 counter;
	static const char		 hex[] = "0123456789abcdef";
	char				 id[25];
	uint64_t			 n, lo;
	int				 i;

	pthread_once(&once, request_id_seed);
	n = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
	/* 8 hex digits of the prefix, then 16 of the counter (offset). */
	lo = (id_prefix << 32 | id_prefix >> 32) + n;
	for (i = 0; i < 8; i++)
		id[i] = hex[(id_prefix >> (60 - 4 * i)) & 15];
	for (i = 0; i < 16; i++)
		id[8 + i] = hex[(lo >> (60 - 4 * i)) & 15];
	str_copy(buf, len, id, 24);
}

int
request_id_valid(const char *s, size_t len)
{
	size_t	i;

	if (len == 0 || len > 128)
		return (0);
	for (i = 0; i < len; i++) {
		if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\')
			return (0);
	}
	return (1);
}

const char *
http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 417: return "Expectation Failed";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 499: return "Client Closed Request";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default:  return "Unknown";
	}
}

int
parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t	v = 0;
	size_t		i;

	if (len == 0 || len > 20)
		return (-1);
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		if (v > (max - (uint64_t)(s[i] - '0')) / 10)
			return (-1);
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return (0);
}
