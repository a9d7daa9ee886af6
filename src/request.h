/*
 * request.h: one request's life: its head and body as the front end hands
 * them over, the route, the legs to upstreams, the answer, the log line.
 *
 * A request owns its legs (leg.h), its cancel cell and one child cell per
 * leg, its deadline and hedge timers, and its answer. It asks the route's
 * mode (fanout.h) what to do at dispatch, at the end of each leg, when the
 * hedge timer fires and when its cell flips, and carries the answer out:
 * starts legs, cuts the losers, writes a leg's response, the envelope
 * (envelope.h) or its own JSON error. Whatever ends a leg (its transfer
 * finished, failed, or was cancelled) goes through leg_ended(), and
 * whatever ends the request through request_end() (both static in
 * request.c), which hands the access log (accesslog.h) the one line.
 *
 * The front ends (h1.c for an HTTP/1.x connection, h2.c for an HTTP/2
 * stream) and the request meet here, at struct front: the request answers
 * through it and sees nothing of a connection.
 */
#ifndef FANOUTD_REQUEST_H
#define FANOUTD_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event_struct.h>

#include "cancel.h"
#include "http.h"
#include "leg.h"
#include "loop.h"
#include "upstream.h"

struct loop;
struct request;
struct config;
struct route_conf;
struct upstream_conf;
struct evbuffer;
struct event;

/*
 * What a request answers to. Each front end keeps its own framing, flow
 * control and lifetime rules behind these operations.
 *
 * respond: queue a response and detach the request. headers holds whole
 *   "Name: value\r\n" lines; content_length is sent as it is (HEAD answers
 *   pass the upstream's), or when -1 as body's length, or when -2 not at
 *   all (a gRPC answer). trailers (NULL: none), lines like headers, follow
 *   the body: HTTP/2 trailers, or an HTTP/1.1 chunked body's trailer
 *   section (the request passes them only to a client that sent
 *   TE: trailers). Returns the bytes queued.
 * stream_begin/data/full/end: a streamed answer (mode proxy): the head now,
 *   the body as it comes; content_length -1 when unknown. These only queue
 *   bytes and never close anything, so they are safe inside curl's
 *   callbacks. When full() says so the caller pauses its source; resume(arg)
 *   runs once the client has taken enough. end() ends the body with
 *   trailers (NULL: none; an HTTP/1.1 answer carries them only when it is
 *   chunked), detaches the request and returns the bytes queued.
 * stream_abort: the body cannot be completed. If nothing of the answer has
 *   reached the client yet it is taken back: returns 0 and the caller
 *   answers as if no stream had begun. Otherwise the answer is cut (the
 *   connection closed, or the stream reset), the request detached, -1
 *   returned; *bytes: what the client was given. Not from inside curl.
 * body_resume: a streamed request body was taken in: read the client
 *   again. Safe inside curl's callbacks (it only arms events).
 * abandon: the request ended without an answer: if it is still the
 *   front's, drop the client (close the connection, reset the stream).
 */
enum front_after {
	FRONT_KEEP,		/* keep alive if the client wants it */
	FRONT_CLOSE,		/* close once written */
	FRONT_CLOSE_LINGER,	/* unread input may follow: linger, then close */
};

struct front;

struct front_ops {
	size_t	(*respond)(struct front *, int status, struct evbuffer *headers,
		    struct evbuffer *body, long long content_length,
		    struct evbuffer *trailers, enum front_after);
	void	(*stream_begin)(struct front *, int status,
		    struct evbuffer *headers, long long content_length,
		    int head_only, void (*resume)(void *), void *arg);
	void	(*stream_data)(struct front *, const char *, size_t);
	int	(*stream_full)(struct front *);
	size_t	(*stream_end)(struct front *, struct evbuffer *trailers);
	int	(*stream_abort)(struct front *, size_t *bytes);
	void	(*body_resume)(struct front *);
	void	(*abandon)(struct front *, struct request *);
};

struct front {
	const struct front_ops	*ops;
};

#define front_respond(f, st, h, b, cl, tr, how) \
	((f)->ops->respond((f), (st), (h), (b), (cl), (tr), (how)))
#define front_stream_begin(f, st, h, cl, ho, fn, arg) \
	((f)->ops->stream_begin((f), (st), (h), (cl), (ho), (fn), (arg)))
#define front_stream_data(f, p, n)	((f)->ops->stream_data((f), (p), (n)))
#define front_stream_full(f)		((f)->ops->stream_full(f))
#define front_stream_end(f, tr)		((f)->ops->stream_end((f), (tr)))
#define front_stream_abort(f, bytes)	((f)->ops->stream_abort((f), (bytes)))
#define front_body_resume(f)		((f)->ops->body_resume(f))
#define front_abandon(f, r)		((f)->ops->abandon((f), (r)))

/*
 * One backpressure policy, both ways: an answer streamed to a client is
 * paused (its upstream transfer with it) while more than FRONT_STREAM_HIGH
 * bytes wait to be written, and goes on below FRONT_STREAM_LOW; a request
 * body streamed upstream stops the client being read while that much
 * waits for the upstream.
 */
#define FRONT_STREAM_HIGH	(256 * 1024)
#define FRONT_STREAM_LOW	(64 * 1024)

enum request_state {
	REQ_READING,	/* head or body still arriving */
	REQ_RUNNING,	/* legs under way */
	REQ_DONE,	/* answered or abandoned; waiting to be freed */
};

struct request {
	struct loop		*loop;
	struct grave		 grave;		/* loop_defer_free() */
	struct front		*front;		/* NULL once the client is gone */
	struct config		*conf;		/* a reference */
	const struct route_conf	*route;
	struct cancel		 cancel;
	enum request_state	 state;
	char			 id[132];
	char			 client[64];	/* address, for X-Forwarded-For */

	/* As received. */
	char			 method[24];
	int			 http_minor;
	int			 h2;		/* came as an HTTP/2 stream */
	int			 tls;
	char			*target;
	size_t			 targetlen;
	const char		*path;		/* into target */
	size_t			 pathlen;	/* path and query */
	size_t			 pathonly;	/* path without query */
	struct http_headers	 headers;
	struct evbuffer		*body;		/* NULL until its first byte */
	int			 has_body;
	int			 grpc;		/* Content-Type application/grpc */
	int			 trailers_ok;	/* may be sent trailers (HTTP/2,
						 * or TE: trailers) */
	int			 grpc_status;	/* of the answer; -1 none yet */
	int			 reject;	/* status to answer with, or 0 */
	const char		*reject_error;

	uint64_t		 started_us;	/* first byte */
	uint64_t		 deadline_ms;	/* absolute, now_ms() clock */
	struct event		*deadline_timer; /* &deadline_ev once armed */
	struct event		 deadline_ev;	/* in here: no allocation */
	uint64_t		 flip_us;

	struct leg		*legs;		/* &leg_one, or an array */
	size_t			 nlegs;
	struct leg		 leg_one;
	unsigned		 legs_running;
	unsigned		 legs_cancelled;
	unsigned		 decided:1;	/* answer chosen: losers are moot */
	unsigned		 once:1;	/* not safe to repeat (fanout.h) */
	unsigned		 starting:1;	/* an action's legs being sent */
	unsigned		 streaming:1;	/* a leg's answer is under way */
	unsigned		 streams_body:1; /* legs take the body as it comes */
	unsigned		 body_ended:1;	/* all of the body is in */
	unsigned		 body_streaming:1; /* legs run, body still coming */
	unsigned		 body_unbounded:1; /* a gRPC stream: flow control,
						    * not max_body_size */
	uint64_t		 body_bytes;	/* received so far */
	struct transfer_source	 source;	/* how legs read that body */
	struct event		*hedge_timer;	/* a mode's FANOUT_TIMER_ARM */
};

/*
 * A request coming in on front (an HTTP/1.x connection; an HTTP/2 stream
 * when h2), from client, over TLS or not, on configuration conf.
 */
struct request	*request_new(struct loop *, struct front *, struct config *,
		    const char *client, int tls, int h2);
/* "HTTP/1.0", "HTTP/1.1" or "HTTP/2.0", for logs and metrics. */
const char	*request_proto(const struct request *);

/*
 * The head as it arrives: the method, the target (in pieces if need be),
 * the header fields. 0, or -1 (out of memory; or a method too long, which
 * the request then refuses with 501).
 */
int		 request_set_method(struct request *, const char *, size_t);
int		 request_add_target(struct request *, const char *, size_t);
int		 request_add_header(struct request *, const char *name,
		    size_t namelen, const char *value, size_t valuelen);
/* The front end refuses the request (431, 501, ...): the answer at dispatch.
 * The first refusal stands. */
void		 request_refuse(struct request *, int status, const char *error);
/* The refusal's status and error, or 0. */
int		 request_refusal(const struct request *, const char **error);

/*
 * The head is in (HTTP/1.minor; HTTP/2 passes 1), and a body follows or
 * not. The request routes itself, checks what it must, and says how the
 * front end goes on with the body:
 *
 *	NONE	there is none: dispatch once the request is complete
 *	COLLECT	read it all (request_body_add), then dispatch
 *	STREAM	dispatch now, and hand the body over as it comes (mode proxy)
 *	REFUSED	declared larger than max_body_size: read none of it, answer
 *		now (request_refusal has the 413)
 *
 * *expect: the client waits for a 100 Continue before it sends the body.
 */
enum request_body {
	REQUEST_BODY_NONE,
	REQUEST_BODY_COLLECT,
	REQUEST_BODY_STREAM,
	REQUEST_BODY_REFUSED,
};
enum request_body request_head_end(struct request *, int http_minor,
		    int has_body, int *expect);

/*
 * The body as it arrives; -1 once it grows larger than max_body_size (the
 * request is then refused with 413), -2 out of memory. request_body_more() tells the legs
 * that more is there (a streamed body; nothing otherwise), and
 * request_body_end() that it is all in. The front end stops reading the
 * client while request_body_full(); the request calls front_body_resume()
 * once its legs have taken enough.
 */
int		 request_body_add(struct request *, const void *, size_t);
void		 request_body_more(struct request *);
void		 request_body_end(struct request *);
int		 request_body_full(const struct request *);

/* Answer or send it upstream: once, when the front end can (never from
 * inside a parser's callbacks). */
void		 request_dispatch(struct request *);
int		 request_dispatched(const struct request *);
/* Answered, or given up: nothing more to hand it. */
int		 request_is_done(const struct request *);
/*
 * The connection is going (client FIN/RST, or shut down): cut the link and
 * cancel the work with reason, or drop a request not yet dispatched.
 */
void		 request_conn_gone(struct request *, enum cancel_reason);
/* Cancel the request's work (deadline, drain). */
void		 request_cancel(struct request *, enum cancel_reason);
/* Answer with fanoutd's own JSON error and end the request. */
void		 request_error(struct request *, int status, const char *error);
int		 request_is_head(const struct request *);

#endif
