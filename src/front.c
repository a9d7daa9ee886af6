/*
 * front.c: client connections.
 *
 * One socket per connection with its own read and write events (not a
 * bufferevent: that costs a FIONREAD ioctl per read and an epoll_ctl pair
 * per answer), llhttp parsing straight out of the input buffer, answers
 * written at once with writev and only left to a write event when the
 * socket is full. A connection serves one request at a time: once a request is
 * complete the parser is paused and further pipelined bytes wait in the
 * input buffer, while EV_READ stays enabled so that the client's FIN or
 * RST reaches us at once (evhttp would disable reading here and see the
 * hang-up only when the answer is written). No read watermark is used: a
 * watermark, once reached, would hide the EOF too. Instead, a client that
 * pipelines more than PIPELINE_MAX bytes ahead stops being read.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <llhttp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "front.h"
#include "h2.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "request.h"
#include "tls.h"
#include "util.h"

#define PIPELINE_MAX	(64 * 1024)
#define STREAM_HIGH	(256 * 1024)	/* pause the upstream above this */
#define STREAM_LOW	(64 * 1024)	/* and resume it below this */
#define LINGER_MS	2000
#define LINGER_BYTES	(1024 * 1024)

enum conn_state {
	CONN_IDLE,		/* kept alive, waiting for a request */
	CONN_HEAD,		/* reading a request head */
	CONN_BODY,		/* reading a request body */
	CONN_WAITING,		/* the request is with the upstreams */
	CONN_WRITING,		/* flushing a response */
	CONN_LINGERING,		/* error sent: discard input, then close */
	CONN_H2,		/* an HTTP/2 session runs it (h2.c) */
	CONN_CLOSED,
};

static const char *const conn_state_names[] = {
	"idle", "head", "body", "waiting", "writing", "lingering", "h2",
	"closed"
};

/* What an HTTP/2 client sends first (RFC 9113 3.4). */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN	(sizeof h2_preface - 1)

struct strbuf {
	char	*p;
	size_t	 len;
	size_t	 cap;
};

struct conn {
	struct front		 front;		/* HTTP/1: the request's view */
	TAILQ_ENTRY(conn)	 entry;
	struct loop		*loop;
	struct grave		 grave;		/* loop_defer_free() */
	struct config		*conf;		/* a reference */
	int			 fd;
	struct bufferevent	*bev;		/* TLS: OpenSSL does the I/O */
	struct h2_session	*h2;		/* CONN_H2 */
	struct event		*rev;		/* EV_READ, while reading */
	struct event		*wev;		/* EV_WRITE, while output waits */
	struct event		*kick;		/* next request, deferred */
	struct evbuffer		*in;
	struct evbuffer		*out;
	struct event		*timer;
	enum conn_state		 state;
	char			 peer[64];
	uint64_t		 id;

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

	/* A streamed answer in progress (see conn_stream_begin). */
	unsigned		 streaming:1;
	unsigned		 chunked:1;
	unsigned		 head_only:1;
	unsigned		 stream_paused:1;
	size_t			 stream_bytes;
	int			 stream_sent;	/* a byte of it left */
	int			 close_wanted;	/* close_after before the head */
	void			(*stream_resume)(void *);
	void			*stream_arg;

	unsigned		 tls:1;
	unsigned		 tls_ready:1;	/* handshake done */
	unsigned		 finishing:1;	/* close once the output is out */
	unsigned		 broken:1;	/* a write failed: close from the loop */
	unsigned		 requests;	/* HTTP/1 requests begun */
	unsigned		 peer_eof:1;	/* half-closed, half_close = wait */
	unsigned		 close_after:1;	/* after the current response */
	unsigned		 linger:1;	/* ... with a lingering close */
	size_t			 lingered;
};

static llhttp_settings_t	parser_settings;
static uint64_t			conn_ids;	/* atomic */

static void	conn_read_cb(evutil_socket_t, short, void *);
static void	conn_write_cb(evutil_socket_t, short, void *);
static void	conn_kick_cb(evutil_socket_t, short, void *);
static void	conn_input(struct conn *);
static void	conn_eof(struct conn *, int);
static void	conn_timer_cb(evutil_socket_t, short, void *);
static void	conn_close(struct conn *, enum cancel_reason);
static void	conn_parse(struct conn *);
static void	conn_reject(struct conn *, int, const char *);
static void	conn_release(struct conn *);
static int	conn_flush(struct conn *);
static void	conn_head(struct conn *, int, struct evbuffer *, long long,
		    enum conn_after);
static void	conn_written(struct conn *, int);
static void	conn_bev_read_cb(struct bufferevent *, void *);
static void	conn_bev_write_cb(struct bufferevent *, void *);
static void	conn_bev_event_cb(struct bufferevent *, short, void *);
static void	conn_start_h2(struct conn *);
static const struct front_ops conn_ops;

#define conn_of(f)	((struct conn *)(void *)(f))

static void
conn_set_state(struct conn *c, enum conn_state state)
{
	if (c->state == state)
		return;
	if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("connection state conn=%llu %s -> %s",
		    (unsigned long long)c->id, conn_state_names[c->state],
		    conn_state_names[state]);
	c->state = state;
}

static void
conn_timer(struct conn *c, uint64_t ms)
{
	struct timeval	tv;

	if (ms == 0) {
		evtimer_del(c->timer);
		return;
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(c->timer, &tv);
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

/* The socket, its events and buffers; safe on a half-built connection. */
static void
conn_release(struct conn *c)
{
	struct event	**evs[] = { &c->rev, &c->wev, &c->kick, &c->timer };
	size_t		  i;

	for (i = 0; i < sizeof evs / sizeof evs[0]; i++) {
		if (*evs[i] != NULL)
			event_free(*evs[i]);
		*evs[i] = NULL;
	}
	if (c->bev != NULL) {
		/* Its buffers, the SSL object and the socket go with it. */
		bufferevent_free(c->bev);
		c->bev = NULL;
		c->in = c->out = NULL;
		c->fd = -1;
	}
	if (c->in != NULL)
		evbuffer_free(c->in);
	if (c->out != NULL)
		evbuffer_free(c->out);
	c->in = c->out = NULL;
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
}

static void
conn_reading(struct conn *c, int on)
{
	if (c->bev != NULL) {
		if (on)
			bufferevent_enable(c->bev, EV_READ);
		else
			bufferevent_disable(c->bev, EV_READ);
	} else if (on && !event_pending(c->rev, EV_READ, NULL))
		event_add(c->rev, NULL);
	else if (!on)
		event_del(c->rev);
}

/* Output is queued: have it written. A bufferevent writes on its own. */
static void
conn_want_write(struct conn *c)
{
	if (c->bev == NULL && !event_pending(c->wev, EV_WRITE, NULL))
		event_add(c->wev, NULL);
}

static void
conn_free(void *arg)
{
	struct conn	*c = arg;

	h2_session_free(c->h2);
	free(c->hname.p);
	free(c->hvalue.p);
	config_unref(c->conf);
	free(c);
}

void
front_accept(struct loop *l, evutil_socket_t fd, struct sockaddr *sa,
    socklen_t salen, int tls)
{
	struct conn	*c;
	SSL		*ssl = NULL;
	int		 one = 1, ok;

	if ((c = calloc(1, sizeof *c)) == NULL) {
		log_warn("accept: out of memory");
		close(fd);
		return;
	}
	c->loop = l;
	c->id = __atomic_add_fetch(&conn_ids, 1, __ATOMIC_RELAXED);
	c->conf = config_ref(l->conf);
	if (getnameinfo(sa, salen, c->peer, sizeof c->peer, NULL, 0,
	    NI_NUMERICHOST) != 0)
		snprintf(c->peer, sizeof c->peer, "unknown");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

	evutil_make_socket_nonblocking(fd);
	c->front.ops = &conn_ops;
	c->fd = fd;
	c->tls = tls != 0;
	c->kick = event_new(l->base, -1, 0, conn_kick_cb, c);
	c->timer = evtimer_new(l->base, conn_timer_cb, c);
	if (tls) {
		/*
		 * OpenSSL through a bufferevent. Its callbacks are deferred to
		 * the loop: a write queued from inside curl's callbacks must not
		 * run into an error callback (and a close) right there.
		 */
		if (c->conf->tls_ctx != NULL &&
		    (ssl = SSL_new(c->conf->tls_ctx)) != NULL)
			c->bev = bufferevent_openssl_socket_new(l->base, fd, ssl,
			    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE |
			    BEV_OPT_DEFER_CALLBACKS);
		if (c->bev == NULL) {
			if (ssl != NULL)
				SSL_free(ssl);
		} else {
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
			bufferevent_setcb(c->bev, conn_bev_read_cb,
			    conn_bev_write_cb, conn_bev_event_cb, c);
			c->in = bufferevent_get_input(c->bev);
			c->out = bufferevent_get_output(c->bev);
		}
		ok = c->bev != NULL &&
		    bufferevent_enable(c->bev, EV_READ | EV_WRITE) == 0;
	} else {
		c->rev = event_new(l->base, fd, EV_READ | EV_PERSIST,
		    conn_read_cb, c);
		c->wev = event_new(l->base, fd, EV_WRITE | EV_PERSIST,
		    conn_write_cb, c);
		c->in = evbuffer_new();
		c->out = evbuffer_new();
		ok = c->rev != NULL && c->wev != NULL && c->in != NULL &&
		    c->out != NULL && event_add(c->rev, NULL) == 0;
	}
	if (!ok || c->kick == NULL || c->timer == NULL) {
		log_warnx("accept: cannot set up connection from %s", c->peer);
		conn_release(c);
		conn_free(c);
		return;
	}
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;

	TAILQ_INSERT_TAIL(&l->conns, c, entry);
	l->nconns++;
	l->conn_opened(l->owner);
	metrics_gauge_add(G_CONNECTIONS_ACTIVE, 1);
	metrics_counter_add(C_CONNECTIONS_TOTAL, 1);

	/* The head must arrive within header_timeout of the accept. */
	c->state = CONN_HEAD;
	conn_timer(c, c->conf->header_timeout_ms);
	log_debug("connection open conn=%llu client=%s",
	    (unsigned long long)c->id, c->peer);
}

/*
 * Tear down. The request (if any) is cut loose first and told why; then the
 * socket goes, and the struct itself after the current callback.
 */
static void
conn_close(struct conn *c, enum cancel_reason why)
{
	struct request	*r;

	if (c->state == CONN_CLOSED)
		return;
	if ((r = c->req) != NULL) {
		c->req = NULL;
		request_conn_gone(r, why);
	}
	if (c->h2 != NULL)
		h2_session_gone(c->h2, why);
	conn_set_state(c, CONN_CLOSED);
	/* Counted out before the close: whoever sees the close and asks
	 * /metrics must not find the connection still there. */
	metrics_gauge_add(G_CONNECTIONS_ACTIVE, -1);
	conn_release(c);
	TAILQ_REMOVE(&c->loop->conns, c, entry);
	c->loop->nconns--;
	loop_defer_free(c->loop, &c->grave, conn_free, c);
	c->loop->conn_gone(c->loop->owner);
}

/* Start on the next request: pipelined bytes may already be waiting. */
static void
conn_next_request(struct conn *c)
{
	struct evbuffer	*in = c->in;

	if (c->close_after || c->peer_eof) {
		if (c->linger && !c->peer_eof) {
			conn_set_state(c, CONN_LINGERING);
			shutdown(c->fd, SHUT_WR);
			conn_timer(c, LINGER_MS);
			conn_reading(c, 1);
			evbuffer_drain(in, evbuffer_get_length(in));
			return;
		}
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	if (loop_draining(c->loop) && evbuffer_get_length(in) == 0) {
		conn_close(c, CANCEL_SHUTDOWN);
		return;
	}
	llhttp_resume(&c->parser);
	c->complete = 0;
	conn_reading(c, 1);
	if (evbuffer_get_length(in) == 0) {
		conn_set_state(c, CONN_IDLE);
		conn_timer(c, c->conf->keepalive_timeout_ms);
		return;
	}
	conn_set_state(c, CONN_HEAD);
	conn_timer(c, c->conf->header_timeout_ms);
	conn_parse(c);
}

/* One read per readiness: the loop stays fair between connections. */
static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn		*c = arg;
	struct evbuffer_iovec	 v;
	ssize_t			 n;

	if (evbuffer_reserve_space(c->in, 16384, &v, 1) < 1) {
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	n = recv(fd, v.iov_base, v.iov_len, 0);
	if (n > 0) {
		v.iov_len = n;
		evbuffer_commit_space(c->in, &v, 1);
		conn_input(c);
	} else if (n == 0)
		conn_eof(c, 0);
	else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		conn_eof(c, 1);
}

/*
 * An HTTP/2 client with prior knowledge starts with the preface, which
 * HTTP/1 would take for a request "PRI *". 1: it is one; 0: it is not;
 * -1: too few bytes yet to tell.
 */
static int
conn_is_h2_preface(struct conn *c)
{
	unsigned char	*p;
	size_t		 len = evbuffer_get_length(c->in);

	if (len > H2_PREFACE_LEN)
		len = H2_PREFACE_LEN;
	if ((p = evbuffer_pullup(c->in, (ssize_t)len)) == NULL ||
	    memcmp(p, h2_preface, len) != 0)
		return (0);
	return (len == H2_PREFACE_LEN ? 1 : -1);
}

static void
conn_input(struct conn *c)
{
	struct evbuffer	*in = c->in;

	if (c->state == CONN_H2) {
		h2_session_input(c->h2, in);
		return;
	}
	if (c->requests == 0 && c->req == NULL && c->conf->http2 &&
	    (c->state == CONN_HEAD || c->state == CONN_IDLE)) {
		switch (conn_is_h2_preface(c)) {
		case 1:
			conn_start_h2(c);
			return;
		case -1:
			return;		/* wait for the rest of it */
		}
	}
	switch (c->state) {
	case CONN_LINGERING:
		c->lingered += evbuffer_get_length(in);
		evbuffer_drain(in, evbuffer_get_length(in));
		if (c->lingered > LINGER_BYTES)
			conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	case CONN_WAITING:
	case CONN_WRITING:
		/* Pipelined requests wait their turn, up to a point. */
		if (evbuffer_get_length(in) > PIPELINE_MAX)
			conn_reading(c, 0);
		return;
	case CONN_IDLE:
		conn_set_state(c, CONN_HEAD);
		conn_timer(c, c->conf->header_timeout_ms);
		/* FALLTHROUGH */
	case CONN_HEAD:
	case CONN_BODY:
		conn_parse(c);
		return;
	case CONN_H2:
	case CONN_CLOSED:
		return;
	}
}

/* The connection speaks HTTP/2 from now on: ALPN chose h2, or the
 * preface came in clear text. */
static void
conn_start_h2(struct conn *c)
{
	conn_set_state(c, CONN_H2);
	conn_timer(c, 0);
	metrics_labelled_add(L_CONNECTIONS_PROTO, PROTO_H2, 1);
	if ((c->h2 = h2_session_new(c, c->conf, c->peer, c->tls)) == NULL) {
		log_warnx("cannot start an HTTP/2 session client=%s", c->peer);
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	if (evbuffer_get_length(c->in) > 0)
		h2_session_input(c->h2, c->in);
	/* Draining: what already came is served, and GOAWAY says so. */
	if (loop_draining(c->loop) && c->state == CONN_H2)
		h2_session_drain(c->h2);
}

static void
conn_parse(struct conn *c)
{
	struct evbuffer		*in = c->in;
	struct evbuffer_iovec	 v;
	llhttp_errno_t		 err;
	size_t			 used;

	while ((c->state == CONN_HEAD || c->state == CONN_BODY) &&
	    evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && v.iov_len > 0) {
		if (c->req != NULL && request_body_full(c->req)) {
			/* The upstream takes the body slower than the client
			 * sends it: stop reading until it catches up. */
			c->body_blocked = 1;
			conn_reading(c, 0);
			return;
		}
		c->exec_start = v.iov_base;
		c->exec_end = c->exec_start + v.iov_len;
		c->name_end = NULL;	/* only meaningful within one buffer */
		err = llhttp_execute(&c->parser, v.iov_base, v.iov_len);
		if (c->state == CONN_CLOSED)
			return;
		if (err == HPE_OK) {
			evbuffer_drain(in, v.iov_len);
			continue;
		}
		if (err == HPE_PAUSED && c->early) {
			/* Mode proxy: send it on while the body arrives. */
			used = llhttp_get_error_pos(&c->parser) -
			    (const char *)v.iov_base;
			evbuffer_drain(in, used);
			c->early = 0;
			llhttp_resume(&c->parser);
			c->req->body_streaming = 1;
			request_dispatch(c->req);
			continue;
		}
		if (err == HPE_PAUSED && c->complete) {
			used = llhttp_get_error_pos(&c->parser) -
			    (const char *)v.iov_base;
			evbuffer_drain(in, used);
			conn_set_state(c, CONN_WAITING);
			conn_timer(c, 0);
			if (c->req->state == REQ_READING)
				request_dispatch(c->req);
			else
				request_body_done(c->req);
			return;
		}
		/* 505 for a well-formed version we do not speak; a
		 * malformed one ("HTTP/1.1x") is a 400 like any syntax error. */
		if (c->error_status == 0 && err == HPE_INVALID_VERSION &&
		    !(c->parser.http_major == 1 && c->parser.http_minor <= 1)) {
			c->error_status = 505;
			c->error_text = "http_version";
		} else if (c->error_status == 0) {
			c->error_status = 400;
			c->error_text = "bad_request";
			log_debug("bad request conn=%llu client=%s error=%s "
			    "reason=\"%s\"", (unsigned long long)c->id, c->peer,
			    llhttp_errno_name(err),
			    llhttp_get_error_reason(&c->parser));
		}
		conn_reject(c, c->error_status, c->error_text);
		return;
	}
}

/*
 * Answer a request we refuse to read on (bad syntax, too large, too slow)
 * and close the connection once it is written, lingering so that the client
 * reads the answer instead of a reset.
 */
static void
conn_reject(struct conn *c, int status, const char *error)
{
	struct request	*r;

	c->close_after = 1;
	c->linger = 1;
	if (c->req == NULL) {
		/* Nothing parsed yet (e.g. garbage as the first byte). */
		c->req = request_new(c->loop, &c->front, c->conf, c->peer);
		if (c->req == NULL) {
			conn_close(c, CANCEL_CLIENT_CLOSED);
			return;
		}
		c->req->tls = c->tls;
	}
	r = c->req;
	request_error(r, status, error);
}

/*
 * Queue a status line and head. content_length -1: chunked for HTTP/1.1,
 * close-delimited for 1.0 (both set the connection up accordingly).
 */
static void
conn_head(struct conn *c, int status, struct evbuffer *headers,
    long long content_length, enum conn_after how)
{
	struct evbuffer	*out = c->out;
	const char	*text = http_status_text(status);
	char		 line[160], *p = line;
	size_t		 textlen = strlen(text);
	int		 keep, http10 = llhttp_get_http_minor(&c->parser) == 0;

	if (how != CONN_KEEP || loop_draining(c->loop) ||
	    (content_length < 0 && http10))
		c->close_after = 1;
	/* Answered before its body was all read (mode proxy may): the rest
	 * cannot be told from a next request, so read it away and close. */
	if (how == CONN_CLOSE_LINGER || c->state == CONN_HEAD ||
	    c->state == CONN_BODY) {
		c->close_after = 1;
		c->linger = 1;
	}
	keep = !c->close_after && !c->peer_eof;
	if (!keep)
		c->close_after = 1;

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
	if (status >= 200 && status != 204 && status != 304) {
		if (content_length >= 0) {
			evbuffer_add(out, "Content-Length: ", 16);
			evbuffer_add_u64(out, (uint64_t)content_length);
			evbuffer_add(out, "\r\n", 2);
		} else if (!http10)
			evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
	}
	if (!keep)
		evbuffer_add(out, "Connection: close\r\n", 19);
	else if (http10)
		evbuffer_add(out, "Connection: keep-alive\r\n", 24);
	evbuffer_add(out, "\r\n", 2);
}

static void
conn_stream_begin(struct front *f, int status, struct evbuffer *headers,
    long long content_length, int head_only, void (*resume)(void *),
    void *arg)
{
	struct conn	*c = conn_of(f);
	size_t	before = evbuffer_get_length(c->out);

	c->close_wanted = c->close_after;
	conn_head(c, status, headers, content_length, CONN_KEEP);
	c->streaming = 1;
	/* Bytes queued before the head (they are ours to keep) count as sent:
	 * the answer could not be taken back anyway. */
	c->stream_sent = before > 0;
	c->head_only = head_only || status == 204 || status == 304 ||
	    status < 200;
	c->chunked = content_length < 0 && !c->head_only &&
	    llhttp_get_http_minor(&c->parser) != 0;
	c->stream_resume = resume;
	c->stream_arg = arg;
	c->stream_bytes = evbuffer_get_length(c->out) - before;
	conn_want_write(c);
}

static void
conn_stream_data(struct front *f, const char *data, size_t len)
{
	struct conn	*c = conn_of(f);
	size_t	before = evbuffer_get_length(c->out);

	if (c->head_only || len == 0)
		return;
	if (c->chunked)
		evbuffer_add_printf(c->out, "%zx\r\n", len);
	evbuffer_add(c->out, data, len);
	if (c->chunked)
		evbuffer_add(c->out, "\r\n", 2);
	c->stream_bytes += evbuffer_get_length(c->out) - before;
	conn_want_write(c);
}

static int
conn_stream_full(struct front *f)
{
	struct conn	*c = conn_of(f);

	if (evbuffer_get_length(c->out) < STREAM_HIGH)
		return (0);
	/* The caller pauses; conn_write_cb resumes it below STREAM_LOW. */
	c->stream_paused = 1;
	return (1);
}

static size_t
conn_stream_end(struct front *f)
{
	struct conn	*c = conn_of(f);
	size_t	bytes;

	if (c->chunked) {
		evbuffer_add(c->out, "0\r\n\r\n", 5);
		c->stream_bytes += 5;
	}
	bytes = c->stream_bytes;
	c->streaming = c->chunked = c->head_only = c->stream_paused = 0;
	c->stream_resume = NULL;
	c->req = NULL;
	conn_set_state(c, CONN_WRITING);
	conn_timer(c, 0);
	if (conn_flush(c) == 1)
		event_active(c->kick, EV_TIMEOUT, 0);
	return (bytes);
}

static int
conn_stream_abort(struct front *f, size_t *bytes)
{
	struct conn	*c = conn_of(f);

	*bytes = c->stream_bytes;
	c->streaming = c->chunked = c->head_only = c->stream_paused = 0;
	c->stream_resume = NULL;
	if (!c->stream_sent) {
		/* Nothing reached the client yet: take it all back. */
		evbuffer_drain(c->out, evbuffer_get_length(c->out));
		if (c->wev != NULL)
			event_del(c->wev);
		c->close_after = c->close_wanted;
		*bytes = 0;
		return (0);
	}
	/* Give the client what is queued, as far as the socket takes it now
	 * (TLS: what OpenSSL took already). */
	if (c->bev == NULL && evbuffer_get_length(c->out) > 0)
		evbuffer_write(c->out, c->fd);
	c->req = NULL;
	conn_close(c, CANCEL_CLIENT_CLOSED);
	return (-1);
}

static size_t
conn_respond(struct front *f, int status, struct evbuffer *headers,
    struct evbuffer *body, long long content_length, enum conn_after how)
{
	struct conn	*c = conn_of(f);
	struct evbuffer	*out = c->out;
	size_t		 before = evbuffer_get_length(out);

	if (content_length < 0)
		content_length = body ? (long long)evbuffer_get_length(body) : 0;
	conn_head(c, status, headers, content_length, how);
	if (body != NULL)
		evbuffer_add_buffer(out, body);

	before = evbuffer_get_length(out) - before;
	c->req = NULL;
	conn_set_state(c, CONN_WRITING);
	conn_timer(c, 0);
	/*
	 * Write now; what the socket does not take waits for EV_WRITE. The
	 * next request starts from the loop, not from inside this call, which
	 * the request that answered is still on the stack of.
	 */
	if (conn_flush(c) == 1)
		event_active(c->kick, EV_TIMEOUT, 0);
	return (before);
}

/* 1 when everything is written, 0 when some waits, -1 on error (closed). */
static int
conn_flush(struct conn *c)
{
	int	n = 0;

	if (c->bev != NULL) {
		/* OpenSSL writes from the loop; its write callback tells us
		 * when all is out. Whatever is queued counts as given. */
		if (c->streaming && evbuffer_get_length(c->out) > 0)
			c->stream_sent = 1;
	} else if (evbuffer_get_length(c->out) > 0 &&
	    (n = evbuffer_write(c->out, c->fd)) == -1 &&
	    errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		log_debug("client write failed conn=%llu client=%s error=\"%s\"",
		    (unsigned long long)c->id, c->peer, strerror(errno));
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return (-1);
	}
	if (n > 0 && c->streaming)
		c->stream_sent = 1;
	if (evbuffer_get_length(c->out) == 0) {
		if (c->wev != NULL)
			event_del(c->wev);
		if ((c->streaming && c->state != CONN_BODY) ||
		    c->state == CONN_H2)
			conn_timer(c, 0);	/* the upstream is slow, not us */
		return (1);
	}
	/* A client that stops reading its answer is dropped after this. */
	conn_want_write(c);
	conn_timer(c, c->conf->body_timeout_ms);
	return (0);
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;
	int		 done;

	if ((done = conn_flush(c)) == -1)
		return;
	conn_written(c, done);
}

/* Some or all of the output went out (done: all of it). */
static void
conn_written(struct conn *c, int done)
{
	if (c->state == CONN_H2) {
		if (done && c->finishing) {
			conn_close(c, CANCEL_CLIENT_CLOSED);
			return;
		}
		if (done)
			h2_session_output_drained(c->h2);
		return;
	}
	if (c->streaming) {
		/* The client reads again: let the upstream go on. */
		if (c->stream_paused && evbuffer_get_length(c->out) < STREAM_LOW) {
			c->stream_paused = 0;
			c->stream_resume(c->stream_arg);
		}
		return;
	}
	if (done == 1 && c->state == CONN_WRITING)
		conn_next_request(c);
}

static void
conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;

	if (c->broken || (c->finishing && evbuffer_get_length(c->out) == 0)) {
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	if (c->state == CONN_WRITING && evbuffer_get_length(c->out) == 0)
		conn_next_request(c);
	else if (c->state == CONN_HEAD || c->state == CONN_BODY)
		conn_parse(c);	/* body that waited for the upstream */
}

static void
conn_abandon(struct front *f, struct request *r)
{
	struct conn	*c = conn_of(f);

	if (c->req != r)
		return;
	c->req = NULL;
	conn_close(c, CANCEL_CLIENT_CLOSED);
}

static void
conn_body_resume(struct front *f)
{
	struct conn	*c = conn_of(f);

	if (!c->body_blocked)
		return;
	c->body_blocked = 0;
	conn_reading(c, 1);
	event_active(c->kick, EV_TIMEOUT, 0);
}

/* The client's FIN (reset = 0) or an error or RST (reset = 1). */
static void
conn_eof(struct conn *c, int reset)
{
	conn_reading(c, 0);
	if (!reset && c->conf->half_close == HALF_CLOSE_WAIT &&
	    (c->state == CONN_WAITING || c->state == CONN_WRITING)) {
		/* A half-close: the client still waits for its answer. */
		c->peer_eof = 1;
		log_debug("client half-closed conn=%llu client=%s, answering",
		    (unsigned long long)c->id, c->peer);
		return;
	}
	log_debug("client %s conn=%llu client=%s state=%s",
	    reset ? "reset" : "closed", (unsigned long long)c->id, c->peer,
	    conn_state_names[c->state]);
	conn_close(c, CANCEL_CLIENT_CLOSED);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;

	switch (c->state) {
	case CONN_HEAD:
		if (c->req == NULL && evbuffer_get_length(c->in) == 0) {
			conn_close(c, CANCEL_CLIENT_CLOSED);
			return;
		}
		conn_reject(c, 408, "header_timeout");
		return;
	case CONN_BODY:
		conn_reject(c, 408, "body_timeout");
		return;
	case CONN_WRITING:
		log_debug("client stopped reading conn=%llu client=%s",
		    (unsigned long long)c->id, c->peer);
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	case CONN_IDLE:
	case CONN_LINGERING:
	default:
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
}

/* ---- TLS: the bufferevent's callbacks ------------------------------------ */

static void
conn_bev_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;

	if (c->state == CONN_CLOSED)
		return;
	if (evbuffer_get_length(c->in) > 0)
		conn_input(c);
}

static void
conn_bev_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn	*c = arg;

	if (c->state == CONN_CLOSED)
		return;
	/* Called when the output has gone down to nothing. */
	if (conn_flush(c) == 1)
		conn_written(c, 1);
}

static void
conn_tls_ready(struct conn *c)
{
	const unsigned char	*proto;
	unsigned int		 len;

	c->tls_ready = 1;
	metrics_labelled_add(L_TLS_HANDSHAKES, TLS_OK, 1);
	SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(c->bev), &proto,
	    &len);
	log_debug("tls handshake done conn=%llu client=%s alpn=%.*s",
	    (unsigned long long)c->id, c->peer, (int)len,
	    len ? (const char *)proto : "-");
	if (len == 2 && memcmp(proto, "h2", 2) == 0 && c->conf->http2)
		conn_start_h2(c);
}

static void
conn_bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn	*c = arg;
	unsigned long	 e;
	char		 why[256];

	if (c->state == CONN_CLOSED)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		conn_tls_ready(c);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (!c->tls_ready) {
		/* Scanners and broken clients: counted, logged quietly. */
		metrics_labelled_add(L_TLS_HANDSHAKES, TLS_ERROR, 1);
		e = bufferevent_get_openssl_error(bev);
		if (e != 0)
			ERR_error_string_n(e, why, sizeof why);
		else
			snprintf(why, sizeof why, "%s", (what & BEV_EVENT_EOF) ?
			    "connection closed" : strerror(errno));
		log_debug("tls handshake failed conn=%llu client=%s "
		    "error=\"%s\"", (unsigned long long)c->id, c->peer, why);
		ERR_clear_error();
		conn_close(c, CANCEL_CLIENT_CLOSED);
		return;
	}
	ERR_clear_error();
	conn_eof(c, (what & BEV_EVENT_ERROR) != 0);
}

/* ---- services for h2.c ---------------------------------------------------- */

struct evbuffer *
conn_output(struct conn *c)
{
	return (c->out);
}

/*
 * Write now what the socket takes. Never closes here, the session being
 * on the stack: a failed write closes the connection from the loop.
 */
void
conn_send(struct conn *c)
{
	int	n;

	if (c->state == CONN_CLOSED || c->broken)
		return;
	if (c->bev == NULL && evbuffer_get_length(c->out) > 0) {
		n = evbuffer_write(c->out, c->fd);
		if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR) {
			log_debug("client write failed conn=%llu client=%s "
			    "error=\"%s\"", (unsigned long long)c->id, c->peer,
			    strerror(errno));
			c->broken = 1;
			event_active(c->kick, EV_TIMEOUT, 0);
			return;
		}
	}
	if (evbuffer_get_length(c->out) > 0) {
		conn_want_write(c);
		conn_timer(c, c->conf->body_timeout_ms);
	} else
		conn_timer(c, 0);
}

void
conn_finish(struct conn *c, int now)
{
	if (c->state == CONN_CLOSED)
		return;
	c->finishing = 1;
	if (now)
		c->broken = 1;
	/* From the loop: whoever asks may be deep in a callback. */
	event_active(c->kick, EV_TIMEOUT, 0);
}

struct loop *
conn_loop(struct conn *c)
{
	return (c->loop);
}

static const struct front_ops conn_ops = {
	conn_respond,
	conn_stream_begin,
	conn_stream_data,
	conn_stream_full,
	conn_stream_end,
	conn_stream_abort,
	conn_body_resume,
	conn_abandon,
};

void
front_drain(struct loop *l)
{
	struct conn	*c, *next;
	char		 peek;

	for (c = TAILQ_FIRST(&l->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->state == CONN_H2) {
			h2_session_drain(c->h2);
			continue;
		}
		/* Idle, or accepted with nothing sent yet (not even waiting
		 * in the socket): nothing to finish. */
		if (c->state == CONN_IDLE || (c->state == CONN_HEAD &&
		    c->req == NULL && evbuffer_get_length(c->in) == 0 &&
		    recv(c->fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) == -1 &&
		    (errno == EAGAIN || errno == EWOULDBLOCK)))
			conn_close(c, CANCEL_SHUTDOWN);
		else
			c->close_after = 1;
	}
}

void
front_stop(struct loop *l)
{
	struct conn	*c, *next;

	for (c = TAILQ_FIRST(&l->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->state == CONN_H2) {
			/* Each stream answered 503, then the connection goes. */
			h2_session_stop(c->h2);
			continue;
		}
		if (c->state == CONN_WAITING && c->req != NULL) {
			/* Answered 503 with Connection: close, then closed. */
			request_cancel(c->req, CANCEL_SHUTDOWN);
			continue;
		}
		conn_close(c, CANCEL_SHUTDOWN);
	}
}

/* ---- llhttp callbacks --------------------------------------------------- */

static int
head_grow(struct conn *c, size_t len)
{
	c->head_bytes += len;
	if (c->head_bytes > c->conf->max_header_size) {
		c->error_status = 431;
		c->error_text = "header_too_large";
		return (-1);
	}
	return (0);
}

static int
on_message_begin(llhttp_t *p)
{
	struct conn	*c = p->data;

	/* Each request runs on the configuration current when it began. */
	if (c->conf != c->loop->conf) {
		config_unref(c->conf);
		c->conf = config_ref(c->loop->conf);
	}
	c->head_bytes = 0;
	c->body_bytes = 0;
	c->hname.len = c->hvalue.len = 0;
	c->value_spans = 0;
	c->trailers = 0;
	if ((c->req = request_new(c->loop, &c->front, c->conf, c->peer)) == NULL) {
		c->error_status = 503;
		c->error_text = "out_of_memory";
		return (-1);
	}
	c->req->tls = c->tls;
	if (c->requests++ == 0)
		metrics_labelled_add(L_CONNECTIONS_PROTO, PROTO_H1, 1);
	return (0);
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
	struct conn	*c = p->data;
	struct request	*r = c->req;
	char		*nt;

	if (head_grow(c, len) == -1)
		return (-1);
	if ((nt = realloc(r->target, r->targetlen + len + 1)) == NULL)
		return (-1);
	memcpy(nt + r->targetlen, at, len);
	r->targetlen += len;
	nt[r->targetlen] = '\0';
	r->target = nt;
	return (0);
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
	struct conn	*c = p->data;

	if (!http_field_name_ok(at, len)) {
		c->error_status = 400;
		c->error_text = "bad_header_name";
		return (-1);
	}
	if (head_grow(c, len) == -1)
		return (-1);
	if (!c->trailers && strbuf_add(&c->hname, at, len) == -1)
		return (-1);
	c->name_end = at + len == c->exec_end ? NULL : at + len;
	return (0);
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn	*c = p->data;
	const char	*from;

	/*
	 * llhttp reports an obs-fold as a second span of the same value with
	 * the CRLF left out: a value continues legitimately only where the
	 * last span ended, or at the start of the next buffer when the last
	 * one ended at the end of its own.
	 */
	if (c->value_spans > 0 && at != c->value_end &&
	    !(c->value_end == NULL && at == c->exec_start)) {
		c->error_status = 400;
		c->error_text = "obs_fold";
		return (-1);
	}
	/* The first span: only ":" and white space since the name (an empty
	 * value folded onto the next line would show a line break). */
	if (c->value_spans == 0) {
		from = c->name_end != NULL ? c->name_end : c->exec_start;
		if (memchr(from, '\n', at - from) != NULL) {
			c->error_status = 400;
			c->error_text = "obs_fold";
			return (-1);
		}
	}
	c->value_spans++;
	c->value_end = at + len == c->exec_end ? NULL : at + len;
	if (!http_field_value_ok(at, len)) {
		c->error_status = 400;
		c->error_text = "bad_header_value";
		return (-1);
	}
	if (head_grow(c, len) == -1)
		return (-1);
	if (!c->trailers && strbuf_add(&c->hvalue, at, len) == -1)
		return (-1);
	return (0);
}

static int
on_header_value_complete(llhttp_t *p)
{
	struct conn	*c = p->data;
	int		 rv;

	c->value_spans = 0;
	if (c->trailers)
		return (0);
	if (c->hname.len == 0) {
		c->error_status = 400;
		c->error_text = "bad_header_name";
		return (-1);
	}
	rv = http_headers_add(&c->req->headers, c->hname.p, c->hname.len,
	    c->hvalue.p ? c->hvalue.p : "", c->hvalue.len);
	c->hname.len = c->hvalue.len = 0;
	return (rv);
}

static int
on_headers_complete(llhttp_t *p)
{
	struct conn			*c = p->data;
	struct request			*r = c->req;
	const struct http_header	*te, *ex;
	const char			*method;

	method = llhttp_method_name(llhttp_get_method(p));
	str_copy(r->method, sizeof r->method, method, strlen(method));
	/* Whatever follows the head now is body, then trailers. */
	c->trailers = 1;
	/* No protocol switch here (Upgrade is hop-by-hop): to llhttp this
	 * is a plain request, and the next one on the connection follows. */
	p->upgrade = 0;
	if (llhttp_get_http_major(p) != 1) {
		c->error_status = 505;
		c->error_text = "http_version";
		return (-1);
	}
	if ((te = http_headers_get(&r->headers, "transfer-encoding")) != NULL &&
	    !strn_eq_ci(te->value, te->valuelen, "chunked")) {
		c->error_status = 501;
		c->error_text = "transfer_encoding";
		return (-1);
	}
	if (te != NULL && llhttp_get_http_minor(p) == 0) {
		/* RFC 9112 6.1: chunked framing in 1.0 is faulty. */
		c->error_status = 400;
		c->error_text = "bad_request";
		return (-1);
	}
	if ((p->flags & F_CONTENT_LENGTH) &&
	    p->content_length > c->conf->max_body_size) {
		c->error_status = 413;
		c->error_text = "body_too_large";
		return (-1);
	}
	r->http_minor = llhttp_get_http_minor(p);
	r->has_body = (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) != 0;
	request_head_done(r);
	if (r->has_body && r->http_minor >= 1 && r->reject == 0 &&
	    (ex = http_headers_get(&r->headers, "expect")) != NULL &&
	    strn_eq_ci(ex->value, ex->valuelen, "100-continue")) {
		/* Written from the loop: this is inside llhttp_execute. */
		evbuffer_add(c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		conn_want_write(c);
	}
	if (r->has_body && !(p->flags & F_CONTENT_LENGTH &&
	    p->content_length == 0)) {
		conn_set_state(c, CONN_BODY);
		conn_timer(c, c->conf->body_timeout_ms);
		if (request_streams_body(r)) {
			r->source.size = (p->flags & F_CONTENT_LENGTH) ?
			    (long long)p->content_length : -1;
			c->early = 1;
			return (HPE_PAUSED);	/* dispatched from conn_parse */
		}
	}
	return (0);
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
	struct conn	*c = p->data;

	c->body_bytes += len;
	if (c->body_bytes > c->conf->max_body_size) {
		c->error_status = 413;
		c->error_text = "body_too_large";
		return (-1);
	}
	if (evbuffer_add(c->req->body, at, len) == -1)
		return (-1);
	if (c->req->body_streaming)
		request_body_more(c->req);
	return (0);
}

static int
on_message_complete(llhttp_t *p)
{
	struct conn	*c = p->data;

	if (!llhttp_should_keep_alive(p))
		c->close_after = 1;
	c->complete = 1;
	/* One request at a time: the rest waits in the input buffer. */
	return (HPE_PAUSED);
}

void
front_init(void)
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
