/*
 * h2.c: the HTTP/2 front end.
 *
 * One nghttp2 server session per connection, fed from the connection's
 * input buffer and writing into its output buffer (nghttp2's mem_recv and
 * mem_send: the socket, plain or TLS, is conn.c's, and the session is the
 * protocol on it, through struct conn_proto). Each stream is one request,
 * and the stream is the struct front that request answers to.
 *
 * Lifetimes. nghttp2 calls us back from inside mem_recv and mem_send;
 * nothing done there may free the session or close the connection: the
 * connection is only ever closed from the loop (conn_finish), and streams
 * are freed through the loop's graveyard. Requests are dispatched after
 * a whole read has been taken in, not from inside nghttp2's callbacks: a
 * HEADERS and RST_STREAM that arrive together never start upstream work,
 * which is what makes a rapid-reset flood cost nothing upstream.
 *
 * Frames are sent from the loop too (a deferred event), so the request
 * side, which may be inside a curl callback, only ever queues.
 *
 * Flow control is manual: the connection window is given back as soon as
 * bytes arrive, a stream's only once its request has passed them on. A
 * slow upstream thus holds back that stream's sender alone.
 */
#ifdef HAVE_CONFIG_H
#include "autoconf.h"
#endif

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "config.h"
#include "conn.h"
#include "h2.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "request.h"
#include "util.h"

#define OUT_HIGH		(128 * 1024)	/* stop taking frames above */
#define MAX_CONTINUATIONS	16
#define BLOCK_SLACK		(16 * 1024)	/* header block over the list limit */
#define NV_MAX			128		/* response header fields */

struct h2_stream {
	struct front		 front;		/* first: the request's view */
	struct h2_session	*s;
	int32_t			 id;
	struct request		*req;		/* NULL once answered or gone */
	TAILQ_ENTRY(h2_stream)	 entry;		/* s->streams */
	TAILQ_ENTRY(h2_stream)	 ready_entry;	/* s->ready */
	struct grave		 grave;

	/* The request coming in. */
	size_t			 header_bytes;
	size_t			 unconsumed;	/* not yet given back */
	char			*authority;
	size_t			 authoritylen;
	struct evbuffer		*cookies;	/* crumbs, joined with "; " */
	int			 reject;	/* status to answer with */
	const char		*reject_error;
	unsigned		 queued:1;	/* on s->ready */
	unsigned		 head_done:1;
	unsigned		 body_done:1;	/* END_STREAM from the client */
	unsigned		 early:1;	/* body streams to the upstream */
	unsigned		 dispatched:1;
	unsigned		 more:1;	/* body arrived since the last run */

	/* The answer going out. */
	int			 status;
	struct evbuffer		*head;		/* "Name: value\r\n" lines */
	long long		 content_length;
	struct evbuffer		*out;		/* body nghttp2 has yet to take */
	struct evbuffer		*trailers;	/* after it, "Name: value" lines */
	size_t			 bytes;		/* for the access log */
	void			(*resume)(void *);
	void			*resume_arg;
	unsigned		 answered:1;	/* a head is queued */
	unsigned		 submitted:1;	/* nghttp2 has it */
	unsigned		 head_only:1;
	unsigned		 out_eof:1;
	unsigned		 deferred:1;	/* the data source said DEFERRED */
	unsigned		 paused:1;	/* the upstream waits for us */
	unsigned		 resume_due:1;
	unsigned		 closed:1;	/* nghttp2 is done with it */
	struct event		*timer;		/* body_timeout: in, or out */
};

TAILQ_HEAD(h2_streams, h2_stream);

struct h2_session {
	struct conn		*c;
	struct loop		*loop;
	struct config		*conf;		/* a reference: the limits */
	const char		*peer;
	int			 tls;
	nghttp2_session		*ng;
	struct h2_streams	 streams;
	struct h2_streams	 ready;		/* to run after the input */
	unsigned		 nstreams;
	struct event		*send_ev;	/* frames go out from the loop */
	struct event		*timer;		/* idle, or a header block open */
	int			 in_block;	/* HEADERS without END_HEADERS */
	int			 had_stream;
	unsigned		 continuations;
	size_t			 block_bytes;
	uint64_t		 reset_tokens;	/* x 1000, for the refill */
	uint64_t		 reset_ms;	/* last refill */
	int			 flood;		/* FLOOD_*, or -1 */
	int			 draining;
	int			 gone;
};

static nghttp2_session_callbacks	*h2_callbacks;
static const struct front_ops		 stream_ops;

static const struct conn_proto	h2_proto;

static void	h2_schedule(struct h2_session *);
static void	h2_send(struct h2_session *);
static void	h2_after(struct h2_session *);
static void	h2_session_gone(struct h2_session *, enum cancel_reason);
static void	h2_session_free(struct h2_session *);
static void	stream_timer_cb(evutil_socket_t, short, void *);

#define stream_of(f)	((struct h2_stream *)(void *)(f))

/* ---- streams -------------------------------------------------------------- */

static void
stream_free(void *arg)
{
	struct h2_stream	*st = arg;

	if (st->timer != NULL)
		event_free(st->timer);
	if (st->out != NULL)
		evbuffer_free(st->out);
	if (st->trailers != NULL)
		evbuffer_free(st->trailers);
	if (st->head != NULL)
		evbuffer_free(st->head);
	if (st->cookies != NULL)
		evbuffer_free(st->cookies);
	free(st->authority);
	free(st);
}

static struct h2_stream *
stream_new(struct h2_session *s, int32_t id)
{
	struct h2_stream	*st;
	struct request		*r;

	if ((st = zalloc(1, sizeof *st)) == NULL)
		return (NULL);
	st->front.ops = &stream_ops;
	st->s = s;
	st->id = id;
	st->out = evbuffer_new();
	st->timer = evtimer_new(s->loop->base, stream_timer_cb, st);
	/* Each request runs on the configuration current when it began. */
	r = request_new(s->loop, &st->front, s->loop->conf, s->peer, s->tls, 1);
	if (st->out == NULL || st->timer == NULL || r == NULL) {
		if (r != NULL)
			request_conn_gone(r, CANCEL_CLIENT_CLOSED);
		stream_free(st);
		return (NULL);
	}
	st->req = r;
	TAILQ_INSERT_TAIL(&s->streams, st, entry);
	s->nstreams++;
	return (st);
}

static void
stream_timer(struct h2_stream *st, uint64_t ms)
{
	evtimer_add_ms(st->timer, ms);
}

/* Run st's request from the loop, once the input at hand is taken in. */
static void
stream_queue(struct h2_stream *st)
{
	if (st->queued || st->closed)
		return;
	st->queued = 1;
	TAILQ_INSERT_TAIL(&st->s->ready, st, ready_entry);
}

/* Cut the stream from its request: the request is told the client went. */
static void
stream_detach(struct h2_stream *st, enum cancel_reason why)
{
	struct request	*r;

	if ((r = st->req) == NULL)
		return;
	st->req = NULL;
	request_conn_gone(r, why);
}

/* nghttp2 has closed it (both ends done, or reset): forget it. */
static void
stream_gone(struct h2_stream *st, enum cancel_reason why)
{
	struct h2_session	*s = st->s;

	if (st->closed)
		return;
	st->closed = 1;
	if (st->queued) {
		TAILQ_REMOVE(&s->ready, st, ready_entry);
		st->queued = 0;
	}
	TAILQ_REMOVE(&s->streams, st, entry);
	s->nstreams--;
	evtimer_del(st->timer);
	stream_detach(st, why);
	loop_defer_free(s->loop, &st->grave, stream_free, st);
}

/* Reset a stream of ours: nghttp2 closes it once the frame is out. */
static void
stream_reset(struct h2_stream *st, uint32_t code)
{
	if (st->closed || st->s->gone)
		return;
	nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, code);
	h2_schedule(st->s);
}

/*
 * body_timeout: a body that stops arriving gets 408, as over HTTP/1.1; an
 * answer the client stops taking (its window stays shut) is reset.
 */
static void
stream_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_stream	*st = arg;

	if (st->closed)
		return;
	if (st->req != NULL && !st->body_done && !st->answered) {
		request_error(st->req, 408, "body_timeout");
		h2_send(st->s);
		return;
	}
	log_debug("http2 stream stalled client=%s stream=%d", st->s->peer,
	    st->id);
	stream_detach(st, CANCEL_CLIENT_CLOSED);
	stream_reset(st, NGHTTP2_CANCEL);
}

/* ---- the answer: from the request's "Name: value" lines to nghttp2 -------- */

/* Names are lower case in HTTP/2; these have no meaning there. */
static int
h2_connection_specific(const char *n, size_t len)
{
	return (strn_eq_ci(n, len, "connection") ||
	    strn_eq_ci(n, len, "keep-alive") ||
	    strn_eq_ci(n, len, "proxy-connection") ||
	    strn_eq_ci(n, len, "transfer-encoding") ||
	    strn_eq_ci(n, len, "upgrade") ||
	    strn_eq_ci(n, len, "content-length"));
}

/*
 * "Name: value\r\n" lines (names lower-cased in place) as nghttp2 fields,
 * after the n already in nva, less the fields with no meaning in HTTP/2.
 * Returns the new count; the fields point into lines, which must stay.
 */
static size_t
stream_fields(struct evbuffer *lines, nghttp2_nv *nva, size_t n, size_t max)
{
	unsigned char	*p, *end, *eol, *colon, *v, *q;
	size_t		 len;

	len = evbuffer_get_length(lines);
	p = len ? evbuffer_pullup(lines, -1) : NULL;
	end = p + len;
	while (p != NULL && p < end && n < max) {
		if ((eol = memchr(p, '\n', end - p)) == NULL)
			eol = end;
		if ((colon = memchr(p, ':', eol - p)) != NULL) {
			for (q = p; q < colon; q++)
				if (*q >= 'A' && *q <= 'Z')
					*q += 'a' - 'A';
			for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t');
			    v++)
				;
			len = eol - v;
			if (len > 0 && v[len - 1] == '\r')
				len--;
			if (!h2_connection_specific((char *)p, colon - p)) {
				nva[n].name = p;
				nva[n].namelen = (size_t)(colon - p);
				nva[n].value = v;
				nva[n].valuelen = len;
				nva[n].flags = NGHTTP2_NV_FLAG_NONE;
				n++;
			}
		}
		p = eol + 1;
	}
	return (n);
}

/* The body is all out: END_STREAM, or the trailers, which carry it. */
static void
stream_trailers(struct h2_stream *st, uint32_t *flags)
{
	nghttp2_nv	nva[NV_MAX];
	size_t		n;

	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (st->trailers == NULL || evbuffer_get_length(st->trailers) == 0)
		return;
	n = stream_fields(st->trailers, nva, 0, NV_MAX);
	if (n > 0 && nghttp2_submit_trailer(st->s->ng, st->id, nva, n) == 0)
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
	evbuffer_free(st->trailers);
	st->trailers = NULL;
}

static ssize_t
stream_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct h2_stream	*st = src->ptr;
	int			 n;

	if ((n = evbuffer_remove(st->out, buf, len)) < 0)
		n = 0;
	st->bytes += (size_t)n;
	if (evbuffer_get_length(st->out) == 0 && st->out_eof) {
		stream_trailers(st, flags);
		evtimer_del(st->timer);
	} else if (n == 0) {
		st->deferred = 1;
		return (NGHTTP2_ERR_DEFERRED);
	} else
		stream_timer(st, st->s->conf->body_timeout_ms);
	if (st->paused && evbuffer_get_length(st->out) < FRONT_STREAM_LOW) {
		/* Resumed from h2_send: curl may answer at once, and that
		 * is better not done from inside nghttp2. */
		st->paused = 0;
		st->resume_due = 1;
	}
	return (n);
}

/* Hand nghttp2 the head (and the body source) of a queued answer. */
static void
stream_submit(struct h2_stream *st)
{
	nghttp2_nv		 nva[NV_MAX];
	nghttp2_data_provider	 dp;
	char			 status[24], date[40], cl[24];
	size_t			 n = 0;
	int			 rv, body;

#define NV(nm, nl, vl, vll) do {					\
	nva[n].name = (uint8_t *)(nm);					\
	nva[n].namelen = (nl);						\
	nva[n].value = (uint8_t *)(vl);					\
	nva[n].valuelen = (vll);					\
	nva[n].flags = NGHTTP2_NV_FLAG_NONE;				\
	n++;								\
} while (0)

	st->submitted = 1;
	NV(":status", 7, status, fmt_u64(status, (uint64_t)st->status));
	NV("date", 4, date, http_date_now(date));
	n = stream_fields(st->head, nva, n, NV_MAX - 1);
	body = !st->head_only;
	if (st->content_length >= 0 && st->status >= 200 &&
	    st->status != 204 && st->status != 304)
		NV("content-length", 14, cl,
		    fmt_u64(cl, (uint64_t)st->content_length));
#undef NV
	/* All there is is the head: END_STREAM on it (a gRPC answer made of
	 * trailers only stays that). Trailers need the data provider. */
	if (body && st->out_eof && evbuffer_get_length(st->out) == 0 &&
	    st->trailers == NULL)
		body = 0;
	dp.source.ptr = st;
	dp.read_callback = stream_read_cb;
	rv = nghttp2_submit_response(st->s->ng, st->id, nva, n,
	    body ? &dp : NULL);
	evbuffer_free(st->head);
	st->head = NULL;
	if (rv != 0) {
		log_debug("http2 cannot submit a response stream=%d error=%s",
		    st->id, nghttp2_strerror(rv));
		stream_reset(st, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	if (body)
		stream_timer(st, st->s->conf->body_timeout_ms);
}

/* Queue a head; it is handed to nghttp2 from the loop (stream_submit). */
static size_t
stream_head(struct h2_stream *st, int status, struct evbuffer *headers,
    long long content_length, int head_only)
{
	size_t	bytes = 0;

	if ((st->head = evbuffer_new()) == NULL) {
		stream_reset(st, NGHTTP2_INTERNAL_ERROR);
		return (0);
	}
	if (headers != NULL) {
		bytes = evbuffer_get_length(headers);
		evbuffer_add_buffer(st->head, headers);
	}
	st->status = status;
	st->content_length = content_length;
	st->head_only = head_only || status < 200 || status == 204 ||
	    status == 304;
	st->answered = 1;
	evtimer_del(st->timer);
	h2_schedule(st->s);
	return (bytes + 16);	/* ":status", "date", as HPACK would have it */
}

/* Keep the trailers for after the body (stream_trailers). */
static size_t
stream_keep_trailers(struct h2_stream *st, struct evbuffer *trailers)
{
	size_t	len;

	if (trailers == NULL || (len = evbuffer_get_length(trailers)) == 0 ||
	    (st->trailers == NULL && (st->trailers = evbuffer_new()) == NULL))
		return (0);
	evbuffer_add_buffer(st->trailers, trailers);
	return (len);
}

static size_t
stream_respond(struct front *f, int status, struct evbuffer *headers,
    struct evbuffer *body, long long content_length,
    struct evbuffer *trailers, enum front_after how)
{
	struct h2_stream	*st = stream_of(f);
	size_t			 bytes;

	st->req = NULL;
	if (st->closed)
		return (0);
	if (content_length == -1)
		content_length = body ? (long long)evbuffer_get_length(body) : 0;
	if (body != NULL)
		evbuffer_add_buffer(st->out, body);
	st->out_eof = 1;
	bytes = stream_keep_trailers(st, trailers);
	bytes += stream_head(st, status, headers, content_length,
	    body == NULL && st->trailers == NULL);
	return (bytes + evbuffer_get_length(st->out));
}

static void
stream_stream_begin(struct front *f, int status, struct evbuffer *headers,
    long long content_length, int head_only, void (*resume)(void *),
    void *arg)
{
	struct h2_stream	*st = stream_of(f);

	st->resume = resume;
	st->resume_arg = arg;
	st->bytes = stream_head(st, status, headers, content_length, head_only);
}

/* Inside curl's write callback: only queue, and wake the loop. */
static void
stream_stream_data(struct front *f, const char *data, size_t len)
{
	struct h2_stream	*st = stream_of(f);

	if (st->head_only || len == 0 || st->closed)
		return;
	evbuffer_add(st->out, data, len);
	if (st->deferred && st->submitted && !st->s->gone) {
		st->deferred = 0;
		nghttp2_session_resume_data(st->s->ng, st->id);
	}
	h2_schedule(st->s);
}

static int
stream_stream_full(struct front *f)
{
	struct h2_stream	*st = stream_of(f);

	if (evbuffer_get_length(st->out) < FRONT_STREAM_HIGH)
		return (0);
	st->paused = 1;
	return (1);
}

static size_t
stream_stream_end(struct front *f, struct evbuffer *trailers)
{
	struct h2_stream	*st = stream_of(f);

	st->req = NULL;
	st->bytes += stream_keep_trailers(st, trailers);
	st->out_eof = 1;
	st->resume = NULL;
	if (st->deferred && st->submitted && !st->s->gone && !st->closed) {
		st->deferred = 0;
		nghttp2_session_resume_data(st->s->ng, st->id);
	}
	h2_schedule(st->s);
	return (st->bytes + evbuffer_get_length(st->out));
}

static int
stream_stream_abort(struct front *f, size_t *bytes)
{
	struct h2_stream	*st = stream_of(f);

	st->resume = NULL;
	st->paused = st->resume_due = 0;
	if (!st->submitted) {
		/* Nothing went out: take the head back. */
		if (st->head != NULL)
			evbuffer_free(st->head);
		st->head = NULL;
		evbuffer_drain(st->out, evbuffer_get_length(st->out));
		st->answered = 0;
		*bytes = 0;
		return (0);
	}
	/* The head is out: a reset is the honest end of a cut answer. */
	*bytes = st->bytes;
	st->req = NULL;
	stream_reset(st, NGHTTP2_INTERNAL_ERROR);
	return (-1);
}

/* The request passed its body on: let the client send more of it. */
static void
stream_body_resume(struct front *f)
{
	struct h2_stream	*st = stream_of(f);

	if (st->unconsumed == 0 || st->closed || st->s->gone)
		return;
	nghttp2_session_consume_stream(st->s->ng, st->id, st->unconsumed);
	st->unconsumed = 0;
	h2_schedule(st->s);
}

static void
stream_abandon(struct front *f, struct request *r)
{
	struct h2_stream	*st = stream_of(f);

	if (st->req != r)
		return;
	st->req = NULL;
	stream_reset(st, NGHTTP2_INTERNAL_ERROR);
}

static const struct front_ops stream_ops = {
	stream_respond,
	stream_stream_begin,
	stream_stream_data,
	stream_stream_full,
	stream_stream_end,
	stream_stream_abort,
	stream_body_resume,
	stream_abandon,
};

/* ---- the request coming in: nghttp2's callbacks ---------------------------- */

static struct h2_stream *
stream_get(struct h2_session *s, int32_t id)
{
	return (nghttp2_session_get_stream_user_data(s->ng, id));
}

static void
h2_flood(struct h2_session *s, int kind)
{
	if (s->flood >= 0)
		return;
	s->flood = kind;
	metrics_labelled_add(L_H2_FLOODS, (unsigned)kind, 1);
	log_warnx("http2 flood, closing connection kind=%s client=%s",
	    kind == FLOOD_RAPID_RESET ? "rapid_reset" : "continuation",
	    s->peer);
}

static int
on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *arg)
{
	struct h2_session	*s = arg;

	if (hd->type == NGHTTP2_HEADERS) {
		s->continuations = 0;
		s->block_bytes = hd->length;
		s->in_block = !(hd->flags & NGHTTP2_FLAG_END_HEADERS);
	} else if (hd->type == NGHTTP2_CONTINUATION) {
		/* Bounded before nghttp2 decodes it (CVE-2024-27316 and
		 * kin): a header block is not a stream of its own. */
		s->continuations++;
		s->block_bytes += hd->length;
		if (s->continuations > MAX_CONTINUATIONS || s->block_bytes >
		    s->conf->max_header_size + BLOCK_SLACK) {
			h2_flood(s, FLOOD_CONTINUATION);
			return (NGHTTP2_ERR_CALLBACK_FAILURE);
		}
		if (hd->flags & NGHTTP2_FLAG_END_HEADERS)
			s->in_block = 0;
	}
	return (0);
}

static int
on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2_session	*s = arg;
	struct h2_stream	*st;

	if (frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return (0);
	if (s->draining)
		return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
	if ((st = stream_new(s, frame->hd.stream_id)) == NULL)
		return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
	s->had_stream = 1;
	nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
	return (0);
}

/*
 * nghttp2 has checked the field against RFC 9113 8.2 and 8.3 already
 * (lower-case token names, no controls in values, pseudo-headers first
 * and once, no connection-specific fields).
 */
static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame,
    const uint8_t *name, size_t namelen, const uint8_t *value,
    size_t valuelen, uint8_t flags, void *arg)
{
	struct h2_session	*s = arg;
	struct h2_stream	*st;
	struct request		*r;

	if (frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
	    (st = stream_get(s, frame->hd.stream_id)) == NULL ||
	    (r = st->req) == NULL)
		return (0);	/* trailers, or a stream already given up */
	/* RFC 9113 6.5.2's measure of a header list. */
	st->header_bytes += namelen + valuelen + 32;
	if (st->header_bytes > s->conf->max_header_size) {
		st->reject = 431;
		st->reject_error = "header_too_large";
	}
	if (st->reject != 0)
		return (0);
	if (namelen > 0 && name[0] == ':') {
		if (strn_eq_ci((const char *)name, namelen, ":method")) {
			if (request_set_method(r, (const char *)value,
			    valuelen) == -1)
				st->reject = request_refusal(r,
				    &st->reject_error);
		} else if (strn_eq_ci((const char *)name, namelen, ":path")) {
			if (request_add_target(r, (const char *)value,
			    valuelen) == -1)
				return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
		} else if (strn_eq_ci((const char *)name, namelen,
		    ":authority")) {
			free(st->authority);
			if ((st->authority = strndup((const char *)value,
			    valuelen)) == NULL)
				return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
			st->authoritylen = valuelen;
		} else if (strn_eq_ci((const char *)name, namelen,
		    ":protocol")) {
			st->reject = 501;	/* no extended CONNECT */
			st->reject_error = "protocol";
		}
		return (0);		/* :scheme: we know how it came */
	}
	if (strn_eq_ci((const char *)name, namelen, "cookie")) {
		/* RFC 9113 8.2.3: crumbs become one field for HTTP/1.1. */
		if (st->cookies == NULL && (st->cookies = evbuffer_new()) == NULL)
			return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
		if (evbuffer_get_length(st->cookies) > 0)
			evbuffer_add(st->cookies, "; ", 2);
		evbuffer_add(st->cookies, value, valuelen);
		return (0);
	}
	if (request_add_header(r, (const char *)name, namelen,
	    (const char *)value, valuelen) == -1)
		return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
	return (0);
}

/* The whole header block is in. */
static int
stream_head_done(struct h2_session *s, struct h2_stream *st, int end_stream)
{
	struct request	*r = st->req;
	size_t		 len;
	int		 expect;

	st->head_done = 1;
	st->body_done = end_stream;
	if (r == NULL)
		return (0);
	if (st->reject != 0) {
		request_refuse(r, st->reject, st->reject_error);
		stream_queue(st);
		return (0);
	}
	if (http_headers_get(&r->headers, "host") == NULL &&
	    st->authority != NULL && request_add_header(r, "host", 4,
	    st->authority, st->authoritylen) == -1)
		return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
	if (st->cookies != NULL && (len = evbuffer_get_length(st->cookies)) &&
	    request_add_header(r, "cookie", 6,
	    (const char *)evbuffer_pullup(st->cookies, -1), len) == -1)
		return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
	switch (request_head_end(r, 1, !end_stream, &expect)) {
	case REQUEST_BODY_STREAM:
		st->early = 1;
		/* FALLTHROUGH */
	case REQUEST_BODY_COLLECT:
	case REQUEST_BODY_NONE:
		if (!end_stream)
			stream_timer(st, s->conf->body_timeout_ms);
		break;
	case REQUEST_BODY_REFUSED:
		break;
	}
	if (end_stream || st->early || request_refusal(r, NULL) != 0)
		stream_queue(st);
	return (0);
}

/* A token bucket of RST_STREAM frames: CVE-2023-44487's rapid reset. */
static int
h2_reset_allowed(struct h2_session *s)
{
	uint64_t	now = now_ms(), cap = (uint64_t)s->conf->h2_max_streams;

	/* cap tokens, refilled at cap a second; kept in thousandths. */
	s->reset_tokens += (now - s->reset_ms) * cap;
	if (s->reset_tokens > cap * 1000)
		s->reset_tokens = cap * 1000;
	s->reset_ms = now;
	if (s->reset_tokens < 1000)
		return (0);
	s->reset_tokens -= 1000;
	return (1);
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2_session	*s = arg;
	struct h2_stream	*st;
	int			 end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if ((st = stream_get(s, frame->hd.stream_id)) == NULL)
			return (0);
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
			return (stream_head_done(s, st, end));
		/* Trailers: dropped (they are not headers), but they end
		 * the body. */
		if (end) {
			st->body_done = 1;
			stream_queue(st);
		}
		return (0);
	case NGHTTP2_DATA:
		if (end && (st = stream_get(s, frame->hd.stream_id)) != NULL) {
			st->body_done = 1;
			evtimer_del(st->timer);
			stream_queue(st);
		}
		return (0);
	case NGHTTP2_RST_STREAM:
		metrics_counter_add(C_H2_STREAMS_RESET, 1);
		if (!h2_reset_allowed(s)) {
			h2_flood(s, FLOOD_RAPID_RESET);
			return (NGHTTP2_ERR_CALLBACK_FAILURE);
		}
		return (0);
	}
	return (0);
}

static int
on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t id,
    const uint8_t *data, size_t len, void *arg)
{
	struct h2_session	*s = arg;
	struct h2_stream	*st = stream_get(s, id);
	struct request		*r;

	/* The connection's window is given back at once: one slow stream
	 * must not stall the others. */
	nghttp2_session_consume_connection(ng, len);
	if (st == NULL || (r = st->req) == NULL || request_is_done(r) ||
	    st->reject != 0) {
		nghttp2_session_consume_stream(ng, id, len);
		return (0);
	}
	switch (request_body_add(r, data, len)) {
	case -1:
		/* Larger than max_body_size: 413, the rest thrown away. */
		st->reject = request_refusal(r, &st->reject_error);
		nghttp2_session_consume_stream(ng, id, len);
		stream_queue(st);
		return (0);
	case -2:
		return (NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE);
	}
	if (request_body_full(r))
		st->unconsumed += len;	/* given back by stream_body_resume */
	else
		nghttp2_session_consume_stream(ng, id, len);
	stream_timer(st, s->conf->body_timeout_ms);
	st->more = 1;
	stream_queue(st);
	return (0);
}

static int
on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
	struct h2_session	*s = arg;
	struct h2_stream	*st = stream_get(s, id);

	if (st == NULL)
		return (0);
	if (code != NGHTTP2_NO_ERROR && st->req != NULL)
		log_debug("http2 stream reset client=%s stream=%d error=%s "
		    "request_id=%s", s->peer, id, nghttp2_http2_strerror(code),
		    st->req->id);
	/* A request still attached was in flight (or arriving): the client
	 * gave up on it. Its cell flips; the other streams go on. */
	stream_gone(st, CANCEL_CLIENT_CLOSED);
	return (0);
}

static int
on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2_session	*s = arg;
	struct h2_stream	*st;

	if ((frame->hd.type != NGHTTP2_HEADERS &&
	    frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
	    (st = stream_get(s, frame->hd.stream_id)) == NULL)
		return (0);
	/* Answered before the body was all in (413, 408, an early
	 * answer): tell the client to stop sending it (RFC 9113 8.1). */
	if (!st->body_done)
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_NO_ERROR);
	return (0);
}

/* nghttp2's own word on what the client did wrong, for the debug log. */
static int
on_error(nghttp2_session *ng, int code, const char *msg, size_t len,
    void *arg)
{
	struct h2_session	*s = arg;

	log_debug("http2 client error client=%s error=\"%.*s\"", s->peer,
	    (int)len, msg);
	return (0);
}

/* ---- the session ------------------------------------------------------------ */

static void
h2_callbacks_init(void)
{
	nghttp2_session_callbacks	*cb;

	if (nghttp2_session_callbacks_new(&cb) != 0)
		return;
	nghttp2_session_callbacks_set_on_begin_frame_callback(cb,
	    on_begin_frame);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
	    on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb,
	    on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb,
	    on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb,
	    on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb,
	    on_frame_send);
	nghttp2_session_callbacks_set_error_callback2(cb, on_error);
	h2_callbacks = cb;
}

static void
h2_send_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_session	*s = arg;

	h2_send(s);
	h2_after(s);
}

static void
h2_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_session	*s = arg;

	if (s->gone)
		return;
	log_debug("http2 connection %s client=%s", s->in_block ?
	    "header block timed out" : "idle", s->peer);
	nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
	h2_send(s);
	conn_finish(s->c, 0);
}

/* The connection timer: idle (no stream), or a header block left open. */
static void
h2_arm(struct h2_session *s)
{
	uint64_t	ms;

	/* Before the first stream, the first request is what is awaited,
	 * as over HTTP/1.1 (header_timeout); between streams, idleness. */
	if (s->in_block || (s->nstreams == 0 && !s->had_stream))
		ms = s->conf->header_timeout_ms;
	else if (s->nstreams == 0)
		ms = s->conf->keepalive_timeout_ms;
	else {
		evtimer_del(s->timer);
		return;
	}
	if (s->in_block || !evtimer_pending(s->timer, NULL))
		evtimer_add_ms(s->timer, ms);
}

static struct h2_session *
h2_session_new(struct conn *c, struct config *conf)
{
	static pthread_once_t	 once = PTHREAD_ONCE_INIT;
	struct h2_session	*s;
	nghttp2_option		*opt = NULL;
	nghttp2_settings_entry	 iv[4];
	struct loop		*l = conn_loop(c);

	pthread_once(&once, h2_callbacks_init);
	if (h2_callbacks == NULL || (s = calloc(1, sizeof *s)) == NULL)
		return (NULL);
	s->c = c;
	s->loop = l;
	s->conf = config_ref(conf);
	s->peer = conn_peer(c);
	s->tls = conn_tls(c);
	s->flood = -1;
	s->reset_ms = now_ms();
	s->reset_tokens = (uint64_t)conf->h2_max_streams * 1000;
	TAILQ_INIT(&s->streams);
	TAILQ_INIT(&s->ready);
	s->send_ev = event_new(l->base, -1, 0, h2_send_cb, s);
	s->timer = evtimer_new(l->base, h2_timer_cb, s);
	if (s->send_ev == NULL || s->timer == NULL ||
	    nghttp2_option_new(&opt) != 0)
		goto fail;
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_settings(opt, 64);
#ifdef HAVE_NGHTTP2_OPTION_SET_MAX_CONTINUATIONS
	/* Ours (MAX_CONTINUATIONS) acts first, and says so in the log. */
	nghttp2_option_set_max_continuations(opt, 2 * MAX_CONTINUATIONS);
#endif
#ifdef HAVE_NGHTTP2_OPTION_SET_STREAM_RESET_RATE_LIMIT
	nghttp2_option_set_stream_reset_rate_limit(opt,
	    4 * (uint64_t)conf->h2_max_streams, 4 * (uint64_t)conf->h2_max_streams);
#endif
	if (nghttp2_session_server_new2(&s->ng, h2_callbacks, s, opt) != 0)
		goto fail;
	nghttp2_option_del(opt);
	opt = NULL;

	iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
	iv[0].value = conf->h2_max_streams;
	iv[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
	iv[1].value = (uint32_t)conf->h2_stream_window;
	iv[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
	iv[2].value = (uint32_t)conf->max_header_size;
	iv[3].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH;
	iv[3].value = 0;
	if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, 4) != 0 ||
	    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
	    (int32_t)conf->h2_connection_window) != 0)
		goto fail;
	log_debug("http2 session client=%s tls=%d", s->peer, s->tls);
	h2_arm(s);
	h2_schedule(s);
	return (s);
fail:
	if (opt != NULL)
		nghttp2_option_del(opt);
	h2_session_gone(s, CANCEL_CLIENT_CLOSED);
	h2_session_free(s);
	return (NULL);
}

static void
h2_schedule(struct h2_session *s)
{
	if (!s->gone && !event_pending(s->send_ev, EV_TIMEOUT, NULL))
		event_active(s->send_ev, EV_TIMEOUT, 0);
}

/* Run what the input made ready: dispatch, more body, end of body. */
static void
h2_run_ready(struct h2_session *s)
{
	struct h2_stream	*st;
	struct request		*r;

	while (!s->gone && (st = TAILQ_FIRST(&s->ready)) != NULL) {
		TAILQ_REMOVE(&s->ready, st, ready_entry);
		st->queued = 0;
		if ((r = st->req) == NULL)
			continue;
		if (st->reject != 0 && request_dispatched(r)) {
			/* The body grew too large while legs took it. */
			request_error(r, st->reject, st->reject_error);
			continue;
		}
		if (!st->dispatched) {
			/* Dispatched once the body is in, or at the end of
			 * the head when it streams (mode proxy) or is refused. */
			if (!st->head_done || (!st->body_done && !st->early &&
			    request_refusal(r, NULL) == 0))
				continue;
			st->dispatched = 1;
			st->more = 0;
			if (st->body_done)
				request_body_end(r);
			request_dispatch(r);
			continue;
		}
		if (st->more) {
			st->more = 0;
			request_body_more(r);
		}
		if (st->body_done)
			request_body_end(r);
	}
}

/*
 * Write what the socket takes now. Output the client does not take is
 * its to read within body_timeout (the connection's timer), whatever
 * stream it is for. Never closes here: a failed write closes the
 * connection from the loop.
 */
static void
h2_write(struct h2_session *s)
{
	switch (conn_write(s->c, NULL)) {
	case 0:
		conn_timer(s->c, s->conf->body_timeout_ms);
		break;
	case 1:
		conn_timer(s->c, 0);
		break;
	}
}

/* Take frames from nghttp2 into the connection's output, and write. */
static void
h2_send(struct h2_session *s)
{
	struct evbuffer		*out;
	struct h2_stream	*st, *next;
	const uint8_t		*data;
	ssize_t			 n;
	size_t			 added;

	if (s->gone)
		return;
	out = conn_out(s->c);
	TAILQ_FOREACH(st, &s->streams, entry) {
		if (st->answered && !st->submitted && st->head != NULL)
			stream_submit(st);
	}
	/*
	 * Frames up to a high mark, then the socket. When the socket took it
	 * all there is no write callback to come: go round again while
	 * nghttp2 has more.
	 */
	do {
		added = 0;
		while (evbuffer_get_length(out) < OUT_HIGH) {
			if ((n = nghttp2_session_mem_send(s->ng, &data)) < 0) {
				log_debug("http2 send failed client=%s error=%s",
				    s->peer, nghttp2_strerror((int)n));
				conn_finish(s->c, 1);
				return;
			}
			if (n == 0)
				break;
			evbuffer_add(out, data, (size_t)n);
			added += (size_t)n;
		}
		h2_write(s);
	} while (added > 0 && evbuffer_get_length(out) == 0 &&
	    nghttp2_session_want_write(s->ng));
	/* Upstreams paused for this client may go on. */
	for (st = TAILQ_FIRST(&s->streams); st != NULL; st = next) {
		next = TAILQ_NEXT(st, entry);
		if (st->resume_due && st->resume != NULL) {
			st->resume_due = 0;
			st->resume(st->resume_arg);
		}
	}
}

/* After input or output: is the connection done? */
static void
h2_after(struct h2_session *s)
{
	if (s->gone)
		return;
	if (!nghttp2_session_want_read(s->ng) &&
	    !nghttp2_session_want_write(s->ng)) {
		conn_finish(s->c, 0);
		return;
	}
	if (s->draining && s->nstreams == 0) {
		conn_finish(s->c, 0);
		return;
	}
	h2_arm(s);
}

static void
h2_session_input(struct h2_session *s, struct evbuffer *in)
{
	struct evbuffer_iovec	 v[8];
	ssize_t			 rv;
	int			 i, n;

	if (s->gone) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	while (evbuffer_get_length(in) > 0) {
		n = evbuffer_peek(in, -1, NULL, v, 8);
		if (n > 8)
			n = 8;
		for (i = 0; i < n; i++) {
			rv = nghttp2_session_mem_recv(s->ng, v[i].iov_base,
			    v[i].iov_len);
			if (rv < 0) {
				evbuffer_drain(in, evbuffer_get_length(in));
				if (s->flood < 0)
					log_debug("http2 protocol error client=%s "
					    "error=%s", s->peer,
					    nghttp2_strerror((int)rv));
				/* Say why, if nghttp2 has not, then go. */
				nghttp2_session_terminate_session(s->ng,
				    s->flood >= 0 ? NGHTTP2_ENHANCE_YOUR_CALM :
				    NGHTTP2_PROTOCOL_ERROR);
				h2_send(s);
				conn_finish(s->c, 0);
				return;
			}
			evbuffer_drain(in, v[i].iov_len);
		}
	}
	h2_run_ready(s);
	h2_send(s);
	h2_after(s);
}

static void
h2_session_output_drained(struct h2_session *s)
{
	if (s->gone)
		return;
	h2_send(s);
	h2_after(s);
}

static void
h2_session_drain(struct h2_session *s)
{
	if (s->gone || s->draining)
		return;
	s->draining = 1;
	nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
	    nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
	    NULL, 0);
	h2_send(s);
	h2_after(s);
}

static void
h2_session_stop(struct h2_session *s)
{
	struct h2_stream	*st, *next;

	if (s->gone)
		return;
	h2_session_drain(s);
	for (st = TAILQ_FIRST(&s->streams); st != NULL; st = next) {
		next = TAILQ_NEXT(st, entry);
		if (st->req == NULL)
			continue;
		if (request_dispatched(st->req))
			request_cancel(st->req, CANCEL_SHUTDOWN);
		else
			stream_detach(st, CANCEL_SHUTDOWN);
	}
	h2_send(s);
	conn_finish(s->c, 0);
}

static void
h2_session_gone(struct h2_session *s, enum cancel_reason why)
{
	struct h2_stream	*st;

	if (s == NULL || s->gone)
		return;
	s->gone = 1;
	while ((st = TAILQ_FIRST(&s->streams)) != NULL)
		stream_gone(st, why);
	if (s->ng != NULL)
		nghttp2_session_del(s->ng);
	s->ng = NULL;
	if (s->send_ev != NULL)
		event_free(s->send_ev);
	if (s->timer != NULL)
		event_free(s->timer);
	s->send_ev = s->timer = NULL;
}

static void
h2_session_free(struct h2_session *s)
{
	if (s == NULL)
		return;
	h2_session_gone(s, CANCEL_CLIENT_CLOSED);
	config_unref(s->conf);
	free(s);
}

/* ---- what the connection tells us (conn_proto) ---------------------------- */

static void
h2_ready(void *p, const unsigned char *alpn, unsigned len)
{
}

static void
h2_input(void *p)
{
	struct h2_session	*s = p;

	h2_session_input(s, conn_in(s->c));
}

static void
h2_written(void *p, int done)
{
	struct h2_session	*s = p;

	if (!done) {
		conn_timer(s->c, s->conf->body_timeout_ms);
		return;
	}
	conn_timer(s->c, 0);
	h2_session_output_drained(s);
}

static void
h2_eof(void *p, int reset)
{
	struct h2_session	*s = p;

	log_debug("client %s client=%s state=h2", reset ? "reset" : "closed",
	    s->peer);
	conn_close(s->c, CANCEL_CLIENT_CLOSED);
}

/* The client took none of the output within body_timeout. */
static void
h2_timeout(void *p)
{
	struct h2_session	*s = p;

	conn_close(s->c, CANCEL_CLIENT_CLOSED);
}

static void
h2_kick(void *p)
{
}

static void
h2_drain(void *p)
{
	h2_session_drain(p);
}

static void
h2_stop(void *p)
{
	h2_session_stop(p);
}

static void
h2_gone(void *p, enum cancel_reason why)
{
	h2_session_gone(p, why);
}

static void
h2_free(void *p)
{
	h2_session_free(p);
}

static const struct conn_proto h2_proto = {
	h2_ready,
	h2_input,
	h2_written,
	h2_eof,
	h2_timeout,
	h2_kick,
	h2_drain,
	h2_stop,
	h2_gone,
	h2_free,
};

int
h2_start(struct conn *c, struct config *conf)
{
	struct h2_session	*s;

	conn_timer(c, 0);
	metrics_labelled_add(L_CONNECTIONS_PROTO, PROTO_H2, 1);
	if ((s = h2_session_new(c, conf)) == NULL)
		return (-1);
	conn_set_proto(c, &h2_proto, s);
	if (evbuffer_get_length(conn_in(c)) > 0)
		h2_session_input(s, conn_in(c));
	/* Draining: what already came is served, and GOAWAY says so. */
	if (!conn_closed(c) && loop_draining(s->loop))
		h2_session_drain(s);
	return (0);
}
