/*
 * util.h: small helpers with no state of their own.
 */
#ifndef FANOUTD_UTIL_H
#define FANOUTD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <strings.h>

struct evbuffer;
struct event;

/*
 * calloc(n, size) through malloc and memset. glibc before 2.42 serves
 * calloc from its arenas, never from the per-thread cache malloc uses, so
 * memory freed and zeroed again per request costs about 240 instructions
 * more each time (calloc and _int_malloc in bench/instructions.py). Also
 * given to libcurl and libevent as their calloc (main.c).
 */
void		*zalloc(size_t n, size_t size);

/* CLOCK_MONOTONIC in microseconds and milliseconds. */
uint64_t	 now_us(void);
uint64_t	 now_ms(void);
/* evtimer_add() for ms milliseconds, or us microseconds, from now. */
int		 evtimer_add_ms(struct event *, uint64_t ms);
int		 evtimer_add_us(struct event *, uint64_t us);

/*
 * A timer set far more often than it fires: a connection's, on every
 * request; curl's multi timer, two or three times per transfer. Setting it
 * records when it is owed, and arms the event only when that is sooner
 * than it fires already: no event_del and event_add each time. Fired
 * early, it is armed again for what is left. ev is the caller's evtimer,
 * whose callback asks lazy_timer_fired() first. Times are now_us().
 */
struct lazy_timer {
	struct event	*ev;
	uint64_t	 due;		/* 0: nothing owed */
	uint64_t	 armed;		/* when ev fires; 0: not armed */
};

/* Owed at due (now: the caller's now_us()). 0, or -1 (event_add failed). */
int		 lazy_timer_set(struct lazy_timer *, uint64_t due, uint64_t now);
/* Owed now: run later in this pass of the loop (event_active), rather than
 * through a timer due now, which costs a pass of epoll_wait of its own. */
void		 lazy_timer_soon(struct lazy_timer *, uint64_t now);
/* Nothing owed. */
void		 lazy_timer_clear(struct lazy_timer *);
/* First in ev's callback: 1 when what was owed is due (then nothing is owed
 * any more); 0 when nothing is, or not yet (armed again for the rest). */
int		 lazy_timer_fired(struct lazy_timer *);
/* Wall clock, "2026-11-25T20:46:08.123Z", into buf of at least 32 bytes. */
void		 iso8601_now(char *buf, size_t len);

/* "Tue, 24 Nov 2026 23:00:00 GMT" for now into buf (>= 30 bytes); the
 * string is formatted once a second per thread. Returns its length. */
size_t		 http_date_now(char *buf);

/* Append "name: value\r\n" in one copy. 0 or -1 (out of memory). */
int		 evbuffer_add_field(struct evbuffer *, const char *name,
		    size_t namelen, const char *value, size_t valuelen);

/* Copy len bytes of src (or fewer, to fit) and a NUL into dst of size
 * bytes (> 0). Returns the length copied. */
size_t		 str_copy(char *dst, size_t size, const char *src, size_t len);

/* The decimal digits of v and a NUL into buf (>= 21 bytes); the length. */
size_t		 fmt_u64(char *buf, uint64_t v);

/* Append the decimal digits of v. 0 or -1 (out of memory). */
int		 evbuffer_add_u64(struct evbuffer *, uint64_t v);

/* Append s (len bytes) as a JSON string, quotes included. 0 / -1. */
int		 json_append_string(struct evbuffer *, const char *s, size_t len);

/* A fresh request id: 24 hex digits, unique within this process, and
 * random-prefixed so that restarts do not repeat ids. */
void		 request_id_new(char *buf, size_t len);
/* A client's X-Request-Id is kept when it is 1..128 visible ASCII
 * characters without quotes or backslashes; 1 if acceptable. */
int		 request_id_valid(const char *s, size_t len);

/* Reason phrase for a status code ("Gateway Timeout"). */
const char	*http_status_text(int status);

/*
 * Case-insensitive comparison of a counted string with a C string. Inline:
 * called with a literal, its length is a constant, and most header names
 * are told apart by their length alone, without a call.
 */
static inline int
strn_eq_ci(const char *s, size_t len, const char *lit)
{
	return (__builtin_strlen(lit) == len && strncasecmp(s, lit, len) == 0);
}

/* Parse a decimal unsigned integer of exactly len bytes; 0 / -1. */
int		 parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

#endif
