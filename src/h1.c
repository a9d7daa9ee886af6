/*
 * h1.c: HTTP/1.x on a client connection (RFC 9112): llhttp parsing
 * straight out of the connection's input buffer, keep-alive, pipelining,
 * lingering close, the response head, chunked streaming.
 *
 * A connection serves one request at a time: once a request is complete
 * the parser is paused and further pipelined bytes wait in the input
 * buffer, while the connection keeps reading so that the client's FIN or
 * RST reaches us at once (evhttp would stop reading here and see the
 * hang-up only when the answer is written). A client that pipelines more
 * than PIPELINE_MAX bytes ahead stops being read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <llhttp.h>

#include "config.h"
#include "conn.h"
#include "h1.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "request.h"
#include "util.h"

#define PIPELINE_MAX	(64 * 1024)
#define LINGER_MS	2000
#define LINGER_BYTES	(1024 * 1024)

enum h1_state {
	H1_IDLE,		/* kept alive, waiting for a request */
	H1_HEAD,		/* reading a request head */
	H1_BODY,		/* reading a request body */
	H1_WAITING,		/* the request is with the upstreams */
	H1_WRITING,		/* flushing a response */
	H1_LINGERING,		/* error sent: discard input, then close */
	H1_CLOSED,
};

static const char *const h1_state_names[] = {
	"idle", "head", "body", "waiting", "writing", "lingering", "closed"
};

struct strbuf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

struct h1 {
	struct front		 front;		/* the request's view */
	struct conn		*c;
	struct loop		*loop;
	struct config		*conf;		/* a reference: the current request's */
	enum h1_state		 state;
	unsigned long long	 id;		/* the connection's, for logs */
	const char		*peer;

	llhttp_t		 parser;
	struct request		*req;		/* HEAD, BODY, WAITING */
	size_t			 head_bytes;
	uint64_t		 body_bytes;
	struct strbuf		 hname;
	struct strbuf		 hvalue;
	int			 error_status;	/* set by a parser callback */
	const char		*error_text;
	int			 complete;	/* a whole request was parsed */
	int			 early;		/* head parsed, body to stream */
	int			 body_blocked;	/* the upstream is behind */
	const char		*exec_start;	/* the bytes llhttp is given */
	const char		*exec_end;
	const char		*value_end;	/* where the last value span ended */
	const char		*name_end;	/* where the last name span ended */
	unsigned		 value_spans;	/* of the current value */
	int			 trailers;	/* past the head: drop fields */
	int			 te;		/* Transfer-Encoding: 1 chunked,
						 * -1 something else */

	/* A streamed answer in progress (see h1_stream_begin). */
	unsigned		 streaming:1;
	unsigned		 chunked:1;
	unsigned		 head_only:1;
	unsigned		 stream_paused:1;
	size_t			 stream_bytes;
	int			 stream_sent;	/* a byte of it left */
	int			 close_wanted;	/* close_after before the head */
	void			(*stream_resume)(void *);
	void			*stream_arg;

	unsigned		 requests;	/* requests begun */
	unsigned		 peer_eof:1;	/* half-closed, half_close = wait */
	unsigned		 close_after:1;	/* after the current response */
	unsigned		 linger:1;	/* ... with a lingering close */
	size_t			 lingered;
};

static llhttp_settings_t	parser_settings;
static const struct front_ops	h1_front_ops;
static const struct conn_proto	h1_proto;

static void	h1_parse(struct h1 *);
static void	h1_reject(struct h1 *, int, const char *);

#define h1_of(f)	((struct h1 *)(void *)(f))

static void
h1_set_state(struct h1 *h, enum h1_state state)
{
	if (h->state == state)
		return;
	if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("connection state conn=%llu %s -> %s", h->id,
		    h1_state_names[h->state], h1_state_names[state]);
	h->state = state;
}

static int
strbuf_add(struct strbuf *b, const char *p, size_t len)
{
	char	*np;
	size_t	 ncap;

	if (b->len + len + 1 > b->cap) {
		ncap = b->cap ? b->cap : 64;
		while (ncap < b->len + len + 1)
			ncap *= 2;
		if ((np = realloc(b->p, ncap)) == NULL)
			return (-1);
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
	b->p[b->len] = '\0';
	return (0);
}

/*
 * Write what the socket takes. What waits is the client's to read within
 * body_timeout; a streamed answer that is all out waits on the upstream,
 * not on the client. 1 all written, 0 some waits, -1 the write failed.
 */
static int
h1_flush(struct h1 *h)
{
	size_t	sent;
	int	rv;

	if ((rv = conn_write(h->c, &sent)) == -1)
		return (-1);
	if (sent > 0 && h->streaming)
		h->stream_sent = 1;
	if (rv == 1) {
		if (h->streaming && h->state != H1_BODY)
			conn_timer(h->c, 0);
	} else
		conn_timer(h->c, h->conf->body_timeout_ms);
	return (rv);
}

/* Start on the next request: pipelined bytes may already be waiting. */
static void
h1_next_request(struct h1 *h)
{
	struct evbuffer	*in = conn_in(h->c);

	if (h->close_after || h->peer_eof) {
		if (h->linger && !h->peer_eof) {
			h1_set_state(h, H1_LINGERING);
			conn_shutdown_write(h->c);
			conn_timer(h->c, LINGER_MS);
			conn_reading(h->c, 1);
			evbuffer_drain(in, evbuffer_get_length(in));
			return;
		}
		conn_close(h->c, CANCEL_CLIENT_CLOSED);
		return;
	}
	if (loop_draining(h->loop) && evbuffer_get_length(in) == 0) {
		conn_close(h->c, CANCEL_SHUTDOWN);
		return;
	}
	llhttp_resume(&h->parser);
	h->complete = 0;
	conn_reading(h->c, 1);
	if (evbuffer_get_length(in) == 0) {
		h1_set_state(h, H1_IDLE);
		conn_timer(h->c, h->conf->keepalive_timeout_ms);
		return;
	}
	h1_set_state(h, H1_HEAD);
	conn_timer(h->c, h->conf->header_timeout_ms);
	h1_parse(h);
}

static void
h1_input(void *p)
{
	struct h1	*h = p;
	struct evbuffer	*in = conn_in(h->c);

	switch (h->state) {
	case H1_LINGERING:
		h->lingered += evbuffer_get_length(in);
		evbuffer_drain(in, evbuffer_get_length(in));
		if (h->lingered > LINGER_BYTES)
			conn_close(h->c, CANCEL_CLIENT_CLOSED);
		return;
	case H1_WAITING:
	case H1_WRITING:
		/* Pipelined requests wait their turn, up to a point. */
		if (evbuffer_get_length(in) > PIPELINE_MAX)
			conn_reading(h->c, 0);
		return;
	case H1_IDLE:
		h1_set_state(h, H1_HEAD);
		conn_timer(h->c, h->conf->header_timeout_ms);
		/* FALLTHROUGH */
	case H1_HEAD:
	case H1_BODY:
		h1_parse(h);
		return;
	case H1_CLOSED:
		return;
	}
}

static void
h1_parse(struct h1 *h)
{
	struct evbuffer		*in = conn_in(h->c);
	struct evbuffer_iovec	 v;
	llhttp_errno_t		 err;
	size_t			 used;

	while ((h->state == H1_HEAD || h->state == H1_BODY) &&
	    evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && v.iov_len > 0) {
		if (h->req != NULL && request_body_full(h->req)) {
			/* The upstream takes the body slower than the client
			 * sends it: stop reading until it catches up. */
			h->body_blocked = 1;
			conn_reading(h->c, 0);
			return;
		}
		h->exec_start = v.iov_base;
		h->exec_end = h->exec_start + v.iov_len;
		h->name_end = NULL;	/* only meaningful within one buffer */
		err = llhttp_execute(&h->parser, v.iov_base, v.iov_len);
		if (h->state == H1_CLOSED)
			return;
		if (err == HPE_OK) {
			evbuffer_drain(in, v.iov_len);
			continue;
		}
		if (err == HPE_PAUSED && h->early) {
			/* Mode proxy: send it on while the body arrives. */
			used = llhttp_get_error_pos(&h->parser) -
			    (const char *)v.iov_base;
			evbuffer_drain(in, used);
			h->early = 0;
			llhttp_resume(&h->parser);
			request_dispatch(h->req);
			continue;
		}
		if (err == HPE_PAUSED && h->complete) {
			used = llhttp_get_error_pos(&h->parser) -
			    (const char *)v.iov_base;
			evbuffer_drain(in, used);
			h1_set_state(h, H1_WAITING);
			conn_timer(h->c, 0);
			request_body_end(h->req);
			if (!request_dispatched(h->req))
				request_dispatch(h->req);
			return;
		}
		/* 505 for a well-formed version we do not speak; a
		 * malformed one ("HTTP/1.1x") is a 400 like any syntax error. */
		if (h->error_status == 0 && err == HPE_INVALID_VERSION &&
		    !(h->parser.http_major == 1 && h->parser.http_minor <= 1)) {
			h->error_status = 505;
			h->error_text = "http_version";
		} else if (h->error_status == 0) {
			h->error_status = 400;
			h->error_text = "bad_request";
			log_debug("bad request conn=%llu client=%s error=%s "
			    "reason=\"%s\"", h->id, h->peer,
			    llhttp_errno_name(err),
			    llhttp_get_error_reason(&h->parser));
		}
		h1_reject(h, h->error_status, h->error_text);
		return;
	}
}

/* A new request on the connection, on the configuration current now. */
static struct request *
h1_request_new(struct h1 *h)
{
	if (h->conf != h->loop->conf) {
		config_unref(h->conf);
		h->conf = config_ref(h->loop->conf);
	}
	return (request_new(h->loop, &h->front, h->conf, h->peer,
	    conn_tls(h->c), 0));
}

/*
 * Answer a request we refuse to read on (bad syntax, too large, too slow)
 * and close the connection once it is written, lingering so that the client
 * reads the answer instead of a reset.
 */
static void
h1_reject(struct h1 *h, int status, const char *error)
{
	h->close_after = 1;
	h->linger = 1;
	if (h->req == NULL) {
		/* Nothing parsed yet (e.g. garbage as the first byte). */
		if ((h->req = h1_request_new(h)) == NULL) {
			conn_close(h->c, CANCEL_CLIENT_CLOSED);
			return;
		}
	}
	request_error(h->req, status, error);
}

/* Copy n bytes to p; the end of the copy. */
static inline char *
mem_put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return (p + n);
}

/*
 * Queue a status line and head. content_length -1: chunked for HTTP/1.1,
 * close-delimited for 1.0 (both set the connection up accordingly).
 */
static void
h1_head(struct h1 *h, int status, struct evbuffer *headers,
    long long content_length, enum front_after how)
{
	struct evbuffer	*out = conn_out(h->c);
	const char	*text = http_status_text(status);
	char		 line[160], *p = line;
	size_t		 textlen = strlen(text);
	int		 keep, http10 = llhttp_get_http_minor(&h->parser) == 0;

	if (how != FRONT_KEEP || loop_draining(h->loop) ||
	    (content_length < 0 && http10))
		h->close_after = 1;
	/* Answered before its body was all read (mode proxy may): the rest
	 * cannot be told from a next request, so read it away and close. */
	if (how == FRONT_CLOSE_LINGER || h->state == H1_HEAD ||
	    h->state == H1_BODY) {
		h->close_after = 1;
		h->linger = 1;
	}
	keep = !h->close_after && !h->peer_eof;
	if (!keep)
		h->close_after = 1;

	/* "HTTP/1.1 200 OK\r\nDate: ...\r\n": statuses are 100..999 and
	 * their texts short, so this fits the buffer. */
	memcpy(p, "HTTP/1.1 ", 9);
	p += 9;
	p += fmt_u64(p, (uint64_t)status);
	*p++ = ' ';
	if (textlen > 64)
		textlen = 64;
	memcpy(p, text, textlen);
	p += textlen;
	memcpy(p, "\r\nDate: ", 8);
	p += 8;
	p += http_date_now(p);
	*p++ = '\r';
	*p++ = '\n';
	evbuffer_add(out, line, (size_t)(p - line));
	if (headers != NULL)
		evbuffer_add_buffer(out, headers);
	/* The framing fields and the blank line: one more copy. */
	p = line;
	if (status >= 200 && status != 204 && status != 304) {
		if (content_length >= 0) {
			p = mem_put(p, "Content-Length: ", 16);
			p += fmt_u64(p, (uint64_t)content_length);
			p = mem_put(p, "\r\n", 2);
		} else if (!http10)
			p = mem_put(p, "Transfer-Encoding: chunked\r\n", 28);
	}
	if (!keep)
		p = mem_put(p, "Connection: close\r\n", 19);
	else if (http10)
		p = mem_put(p, "Connection: keep-alive\r\n", 24);
	p = mem_put(p, "\r\n", 2);
	evbuffer_add(out, line, (size_t)(p - line));
}

/* ---- what the request sees (front_ops) ----------------------------------- */

static void
h1_stream_begin(struct front *f, int status, struct evbuffer *headers,
    long long content_length, int head_only, void (*resume)(void *),
    void *arg)
{
	struct h1	*h = h1_of(f);
	struct evbuffer	*out = conn_out(h->c);
	size_t		 before = evbuffer_get_length(out);

	h->close_wanted = h->close_after;
	h1_head(h, status, headers, content_length, FRONT_KEEP);
	h->streaming = 1;
	/* Bytes queued before the head (they are ours to keep) count as sent:
	 * the answer could not be taken back anyway. */
	h->stream_sent = before > 0;
	h->head_only = head_only || status == 204 || status == 304 ||
	    status < 200;
	h->chunked = content_length < 0 && !h->head_only &&
	    llhttp_get_http_minor(&h->parser) != 0;
	h->stream_resume = resume;
	h->stream_arg = arg;
	h->stream_bytes = evbuffer_get_length(out) - before;
	conn_want_write(h->c);
}

static void
h1_stream_data(struct front *f, const char *data, size_t len)
{
	struct h1	*h = h1_of(f);
	struct evbuffer	*out = conn_out(h->c);
	size_t		 before = evbuffer_get_length(out);

	if (h->head_only || len == 0)
		return;
	if (h->chunked)
		evbuffer_add_printf(out, "%zx\r\n", len);
	evbuffer_add(out, data, len);
	if (h->chunked)
		evbuffer_add(out, "\r\n", 2);
	h->stream_bytes += evbuffer_get_length(out) - before;
	conn_want_write(h->c);
}

static int
h1_stream_full(struct front *f)
{
	struct h1	*h = h1_of(f);

	if (evbuffer_get_length(conn_out(h->c)) < FRONT_STREAM_HIGH)
		return (0);
	/* The caller pauses; h1_written resumes it below FRONT_STREAM_LOW. */
	h->stream_paused = 1;
	return (1);
}

/* The last chunk, with the trailer section (RFC 9112 7.1.2). */
static size_t
h1_last_chunk(struct h1 *h, struct evbuffer *trailers)
{
	struct evbuffer	*out = conn_out(h->c);
	size_t		 before = evbuffer_get_length(out);

	evbuffer_add(out, "0\r\n", 3);
	if (trailers != NULL)
		evbuffer_add_buffer(out, trailers);
	evbuffer_add(out, "\r\n", 2);
	return (evbuffer_get_length(out) - before);
}

static size_t
h1_stream_end(struct front *f, struct evbuffer *trailers)
{
	struct h1	*h = h1_of(f);
	size_t		 bytes;

	if (h->chunked)
		h->stream_bytes += h1_last_chunk(h, trailers);
	else if (trailers != NULL && evbuffer_get_length(trailers) > 0)
		log_debug("trailers dropped (the answer is not chunked) "
		    "conn=%llu", h->id);
	bytes = h->stream_bytes;
	h->streaming = h->chunked = h->head_only = h->stream_paused = 0;
	h->stream_resume = NULL;
	h->req = NULL;
	h1_set_state(h, H1_WRITING);
	conn_timer(h->c, 0);
	if (h1_flush(h) == 1)
		conn_kick(h->c);
	return (bytes);
}

static int
h1_stream_abort(struct front *f, size_t *bytes)
{
	struct h1	*h = h1_of(f);

	*bytes = h->stream_bytes;
	h->streaming = h->chunked = h->head_only = h->stream_paused = 0;
	h->stream_resume = NULL;
	if (!h->stream_sent) {
		/* Nothing reached the client yet: take it all back. */
		conn_discard_output(h->c);
		h->close_after = h->close_wanted;
		*bytes = 0;
		return (0);
	}
	/* Give the client what is queued, as far as the socket takes it now
	 * (TLS: what OpenSSL took already). */
	conn_write(h->c, NULL);
	h->req = NULL;
	conn_close(h->c, CANCEL_CLIENT_CLOSED);
	return (-1);
}

static size_t
h1_respond(struct front *f, int status, struct evbuffer *headers,
    struct evbuffer *body, long long content_length,
    struct evbuffer *trailers, enum front_after how)
{
	struct h1	*h = h1_of(f);
	struct evbuffer	*out = conn_out(h->c);
	size_t		 before = evbuffer_get_length(out), len;
	int		 chunked;

	/* Trailers need a chunked body, which HTTP/1.0 and HEAD have not. */
	chunked = trailers != NULL && evbuffer_get_length(trailers) > 0 &&
	    llhttp_get_http_minor(&h->parser) != 0 && content_length < 0 &&
	    status >= 200 && status != 204 && status != 304;
	if (chunked)
		content_length = -1;
	else if (content_length < 0)
		content_length = body ? (long long)evbuffer_get_length(body) : 0;
	h1_head(h, status, headers, content_length, how);
	if (chunked) {
		if (body != NULL && (len = evbuffer_get_length(body)) > 0) {
			evbuffer_add_printf(out, "%zx\r\n", len);
			evbuffer_add_buffer(out, body);
			evbuffer_add(out, "\r\n", 2);
		}
		h1_last_chunk(h, trailers);
	} else if (body != NULL)
		evbuffer_add_buffer(out, body);

	before = evbuffer_get_length(out) - before;
	h->req = NULL;
	h1_set_state(h, H1_WRITING);
	conn_timer(h->c, 0);
	/*
	 * Write now; what the socket does not take waits for EV_WRITE. The
	 * next request starts from the loop, not from inside this call, which
	 * the request that answered is still on the stack of.
	 */
	if (h1_flush(h) == 1)
		conn_kick(h->c);
	return (before);
}

static void
h1_body_resume(struct front *f)
{
	struct h1	*h = h1_of(f);

	if (!h->body_blocked)
		return;
	h->body_blocked = 0;
	conn_reading(h->c, 1);
	conn_kick(h->c);
}

static void
h1_abandon(struct front *f, struct request *r)
{
	struct h1	*h = h1_of(f);

	if (h->req != r)
		return;
	h->req = NULL;
	conn_close(h->c, CANCEL_CLIENT_CLOSED);
}

static const struct front_ops h1_front_ops = {
	h1_respond,
	h1_stream_begin,
	h1_stream_data,
	h1_stream_full,
	h1_stream_end,
	h1_stream_abort,
	h1_body_resume,
	h1_abandon,
};

/* ---- what the connection tells us (conn_proto) ---------------------------- */

static void
h1_ready(void *p, const unsigned char *alpn, unsigned len)
{
}

/* Some or all of the output went out (done: all of it). */
static void
h1_written(void *p, int done)
{
	struct h1	*h = p;

	if (done) {
		if (h->streaming && h->state != H1_BODY)
			conn_timer(h->c, 0);	/* the upstream is slow, not us */
	} else
		conn_timer(h->c, h->conf->body_timeout_ms);
	if (h->streaming) {
		/* The socket took some of it: no taking the answer back. */
		h->stream_sent = 1;
		/* The client reads again: let the upstream go on. */
		if (h->stream_paused &&
		    evbuffer_get_length(conn_out(h->c)) < FRONT_STREAM_LOW) {
			h->stream_paused = 0;
			h->stream_resume(h->stream_arg);
		}
		return;
	}
	if (done && h->state == H1_WRITING)
		h1_next_request(h);
}

/* The client's FIN (reset = 0) or an error or RST (reset = 1). */
static void
h1_eof(void *p, int reset)
{
	struct h1	*h = p;

	if (!reset && h->conf->half_close == HALF_CLOSE_WAIT &&
	    (h->state == H1_WAITING || h->state == H1_WRITING)) {
		/* A half-close: the client still waits for its answer. */
		h->peer_eof = 1;
		log_debug("client half-closed conn=%llu client=%s, answering",
		    h->id, h->peer);
		return;
	}
	log_debug("client %s conn=%llu client=%s state=%s",
	    reset ? "reset" : "closed", h->id, h->peer,
	    h1_state_names[h->state]);
	conn_close(h->c, CANCEL_CLIENT_CLOSED);
}

static void
h1_timeout(void *p)
{
	struct h1	*h = p;

	switch (h->state) {
	case H1_HEAD:
		if (h->req == NULL &&
		    evbuffer_get_length(conn_in(h->c)) == 0) {
			conn_close(h->c, CANCEL_CLIENT_CLOSED);
			return;
		}
		h1_reject(h, 408, "header_timeout");
		return;
	case H1_BODY:
		h1_reject(h, 408, "body_timeout");
		return;
	case H1_WRITING:
		log_debug("client stopped reading conn=%llu client=%s", h->id,
		    h->peer);
		conn_close(h->c, CANCEL_CLIENT_CLOSED);
		return;
	case H1_IDLE:
	case H1_LINGERING:
	default:
		conn_close(h->c, CANCEL_CLIENT_CLOSED);
		return;
	}
}

static void
h1_kick(void *p)
{
	struct h1	*h = p;

	if (h->state == H1_WRITING &&
	    evbuffer_get_length(conn_out(h->c)) == 0)
		h1_next_request(h);
	else if (h->state == H1_HEAD || h->state == H1_BODY)
		h1_parse(h);	/* body that waited for the upstream */
}

static void
h1_drain(void *p)
{
	struct h1	*h = p;

	/* Idle, or accepted with nothing sent yet (not even waiting in the
	 * socket): nothing to finish. */
	if (h->state == H1_IDLE || (h->state == H1_HEAD && h->req == NULL &&
	    conn_quiet(h->c)))
		conn_close(h->c, CANCEL_SHUTDOWN);
	else
		h->close_after = 1;
}

static void
h1_stop(void *p)
{
	struct h1	*h = p;

	if (h->state == H1_WAITING && h->req != NULL) {
		/* Answered 503 with Connection: close, then closed. */
		request_cancel(h->req, CANCEL_SHUTDOWN);
		return;
	}
	conn_close(h->c, CANCEL_SHUTDOWN);
}

static void
h1_gone(void *p, enum cancel_reason why)
{
	struct h1	*h = p;
	struct request	*r;

	if ((r = h->req) != NULL) {
		h->req = NULL;
		request_conn_gone(r, why);
	}
	h1_set_state(h, H1_CLOSED);
}

static void
h1_free(void *p)
{
	struct h1	*h = p;

	free(h->hname.p);
	free(h->hvalue.p);
	config_unref(h->conf);
	free(h);
}

static const struct conn_proto h1_proto = {
	h1_ready,
	h1_input,
	h1_written,
	h1_eof,
	h1_timeout,
	h1_kick,
	h1_drain,
	h1_stop,
	h1_gone,
	h1_free,
};

int
h1_start(struct conn *c, struct config *conf)
{
	struct h1	*h;

	if ((h = calloc(1, sizeof *h)) == NULL)
		return (-1);
	h->front.ops = &h1_front_ops;
	h->c = c;
	h->loop = conn_loop(c);
	h->conf = config_ref(conf);
	h->id = conn_id(c);
	h->peer = conn_peer(c);
	h->state = H1_HEAD;
	llhttp_init(&h->parser, HTTP_REQUEST, &parser_settings);
	h->parser.data = h;
	conn_set_proto(c, &h1_proto, h);
	if (evbuffer_get_length(conn_in(c)) > 0)
		h1_input(h);
	return (0);
}

/* ---- llhttp callbacks --------------------------------------------------- */

static int
head_grow(struct h1 *h, size_t len)
{
	h->head_bytes += len;
	if (h->head_bytes > h->conf->max_header_size) {
		h->error_status = 431;
		h->error_text = "header_too_large";
		return (-1);
	}
	return (0);
}

static int
on_message_begin(llhttp_t *p)
{
	struct h1	*h = p->data;

	h->head_bytes = 0;
	h->body_bytes = 0;
	h->hname.len = h->hvalue.len = 0;
	h->value_spans = 0;
	h->trailers = 0;
	h->te = 0;
	if ((h->req = h1_request_new(h)) == NULL) {
		h->error_status = 503;
		h->error_text = "out_of_memory";
		return (-1);
	}
	if (h->requests++ == 0)
		metrics_labelled_add(L_CONNECTIONS_PROTO, PROTO_H1, 1);
	return (0);
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
	struct h1	*h = p->data;

	if (head_grow(h, len) == -1)
		return (-1);
	return (request_add_target(h->req, at, len));
}

/*
 * llhttp lets a few things through that a proxy must not (RFC 9112 5.1,
 * 5.2, 9110 5.5): a field name is a token, so no white space before the
 * colon; a value holds no CR, LF, NUL or other controls but HTAB, so no
 * obs-fold either. Forwarding them would invite request smuggling.
 * Trailers (after a chunked body) are read and dropped: they are not
 * headers, and must not become some.
 */
static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct h1	*h = p->data;

	if (!http_field_name_ok(at, len)) {
		h->error_status = 400;
		h->error_text = "bad_header_name";
		return (-1);
	}
	if (head_grow(h, len) == -1)
		return (-1);
	if (!h->trailers && strbuf_add(&h->hname, at, len) == -1)
		return (-1);
	h->name_end = at + len == h->exec_end ? NULL : at + len;
	return (0);
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct h1	*h = p->data;
	const char	*from;

	/*
	 * llhttp reports an obs-fold as a second span of the same value with
	 * the CRLF left out: a value continues legitimately only where the
	 * last span ended, or at the start of the next buffer when the last
	 * one ended at the end of its own.
	 */
	if (h->value_spans > 0 && at != h->value_end &&
	    !(h->value_end == NULL && at == h->exec_start)) {
		h->error_status = 400;
		h->error_text = "obs_fold";
		return (-1);
	}
	/* The first span: only ":" and white space since the name (an empty
	 * value folded onto the next line would show a line break). */
	if (h->value_spans == 0) {
		from = h->name_end != NULL ? h->name_end : h->exec_start;
		if (memchr(from, '\n', at - from) != NULL) {
			h->error_status = 400;
			h->error_text = "obs_fold";
			return (-1);
		}
	}
	h->value_spans++;
	h->value_end = at + len == h->exec_end ? NULL : at + len;
	if (!http_field_value_ok(at, len)) {
		h->error_status = 400;
		h->error_text = "bad_header_value";
		return (-1);
	}
	if (head_grow(h, len) == -1)
		return (-1);
	if (!h->trailers && strbuf_add(&h->hvalue, at, len) == -1)
		return (-1);
	return (0);
}

static int
on_header_value_complete(llhttp_t *p)
{
	struct h1	*h = p->data;
	int		 rv;

	h->value_spans = 0;
	if (h->trailers)
		return (0);
	if (h->hname.len == 0) {
		h->error_status = 400;
		h->error_text = "bad_header_name";
		return (-1);
	}
	/* The framing is ours to check: the first Transfer-Encoding says. */
	if (h->te == 0 && strn_eq_ci(h->hname.p, h->hname.len,
	    "transfer-encoding"))
		h->te = strn_eq_ci(h->hvalue.p ? h->hvalue.p : "",
		    h->hvalue.len, "chunked") ? 1 : -1;
	rv = request_add_header(h->req, h->hname.p, h->hname.len,
	    h->hvalue.p ? h->hvalue.p : "", h->hvalue.len);
	h->hname.len = h->hvalue.len = 0;
	return (rv);
}

static int
on_headers_complete(llhttp_t *p)
{
	struct h1	*h = p->data;
	struct request	*r = h->req;
	const char	*method;
	int		 has_body, expect;

	method = llhttp_method_name(llhttp_get_method(p));
	if (request_set_method(r, method, strlen(method)) == -1)
		return (-1);
	/* Whatever follows the head now is body, then trailers. */
	h->trailers = 1;
	/* No protocol switch here (Upgrade is hop-by-hop): to llhttp this
	 * is a plain request, and the next one on the connection follows. */
	p->upgrade = 0;
	if (llhttp_get_http_major(p) != 1) {
		h->error_status = 505;
		h->error_text = "http_version";
		return (-1);
	}
	if (h->te == -1) {
		h->error_status = 501;
		h->error_text = "transfer_encoding";
		return (-1);
	}
	if (h->te != 0 && llhttp_get_http_minor(p) == 0) {
		/* RFC 9112 6.1: chunked framing in 1.0 is faulty. */
		h->error_status = 400;
		h->error_text = "bad_request";
		return (-1);
	}
	has_body = (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) != 0;
	switch (request_head_end(r, llhttp_get_http_minor(p), has_body,
	    &expect)) {
	case REQUEST_BODY_REFUSED:
		/* Not read: the answer goes now, the connection lingers. */
		h->error_status = request_refusal(r, &h->error_text);
		return (-1);
	case REQUEST_BODY_STREAM:
		h1_set_state(h, H1_BODY);
		conn_timer(h->c, h->conf->body_timeout_ms);
		h->early = 1;
		break;
	case REQUEST_BODY_COLLECT:
		h1_set_state(h, H1_BODY);
		conn_timer(h->c, h->conf->body_timeout_ms);
		break;
	case REQUEST_BODY_NONE:
		break;
	}
	if (expect) {
		/* Written from the loop: this is inside llhttp_execute. */
		evbuffer_add(conn_out(h->c), "HTTP/1.1 100 Continue\r\n\r\n", 25);
		conn_want_write(h->c);
	}
	return (h->early ? HPE_PAUSED : 0);	/* dispatched from h1_parse */
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
	struct h1	*h = p->data;

	switch (request_body_add(h->req, at, len)) {
	case -1:
		h->error_status = request_refusal(h->req, &h->error_text);
		return (-1);
	case -2:
		return (-1);
	}
	request_body_more(h->req);
	return (0);
}

static int
on_message_complete(llhttp_t *p)
{
	struct h1	*h = p->data;

	if (!llhttp_should_keep_alive(p))
		h->close_after = 1;
	h->complete = 1;
	/* One request at a time: the rest waits in the input buffer. */
	return (HPE_PAUSED);
}

void
h1_init(void)
{
	llhttp_settings_init(&parser_settings);
	parser_settings.on_message_begin = on_message_begin;
	parser_settings.on_url = on_url;
	parser_settings.on_header_field = on_header_field;
	parser_settings.on_header_value = on_header_value;
	parser_settings.on_header_value_complete = on_header_value_complete;
	parser_settings.on_headers_complete = on_headers_complete;
	parser_settings.on_body = on_body;
	parser_settings.on_message_complete = on_message_complete;
}
