/*
 * front.h: client connections: plain or TLS sockets, HTTP/1.1 parsed by
 * llhttp (keep-alive, pipelining, timeouts, limits) or HTTP/2 (h2.c).
 *
 * Reading stays enabled while a request is with the upstreams, so that a
 * client's FIN or RST is seen at once and cancels the request.
 */
#ifndef FANOUTD_FRONT_H
#define FANOUTD_FRONT_H

#include <stddef.h>
#include <sys/socket.h>

#include <event2/util.h>

struct loop;
struct conn;
struct front;
struct evbuffer;
struct request;

enum conn_after {
	CONN_KEEP,		/* keep alive if the client wants it */
	CONN_CLOSE,		/* close once written */
	CONN_CLOSE_LINGER,	/* unread input may follow: linger, then close */
};

void	front_init(void);
void	front_accept(struct loop *, evutil_socket_t, struct sockaddr *,
	    socklen_t, int tls);

/*
 * What a request answers to: an HTTP/1.x connection (front.c) or an HTTP/2
 * stream (h2.c). The request sees only these operations; each side keeps
 * its own framing, flow control and lifetime rules behind them.
 *
 * respond: queue a response and detach the request. headers holds whole
 *   "Name: value\r\n" lines; content_length is sent as it is (HEAD answers
 *   pass the upstream's) or, when -1, as body's length. Returns the bytes
 *   queued.
 * stream_begin/data/full/end: a streamed answer (mode proxy): the head now,
 *   the body as it comes; content_length -1 when unknown. These only queue
 *   bytes and never close anything, so they are safe inside curl's
 *   callbacks. When full() says so the caller pauses its source; resume(arg)
 *   runs once the client has taken enough. end() detaches the request and
 *   returns the bytes queued.
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
struct front_ops {
	size_t	(*respond)(struct front *, int status, struct evbuffer *headers,
		    struct evbuffer *body, long long content_length,
		    enum conn_after);
	void	(*stream_begin)(struct front *, int status,
		    struct evbuffer *headers, long long content_length,
		    int head_only, void (*resume)(void *), void *arg);
	void	(*stream_data)(struct front *, const char *, size_t);
	int	(*stream_full)(struct front *);
	size_t	(*stream_end)(struct front *);
	int	(*stream_abort)(struct front *, size_t *bytes);
	void	(*body_resume)(struct front *);
	void	(*abandon)(struct front *, struct request *);
};

struct front {
	const struct front_ops	*ops;
};

#define front_respond(f, st, h, b, cl, how) \
	((f)->ops->respond((f), (st), (h), (b), (cl), (how)))
#define front_stream_begin(f, st, h, cl, ho, fn, arg) \
	((f)->ops->stream_begin((f), (st), (h), (cl), (ho), (fn), (arg)))
#define front_stream_data(f, p, n)	((f)->ops->stream_data((f), (p), (n)))
#define front_stream_full(f)		((f)->ops->stream_full(f))
#define front_stream_end(f)		((f)->ops->stream_end(f))
#define front_stream_abort(f, bytes)	((f)->ops->stream_abort((f), (bytes)))
#define front_body_resume(f)		((f)->ops->body_resume(f))
#define front_abandon(f, r)		((f)->ops->abandon((f), (r)))

/* For h2.c: the connection under an HTTP/2 session. */
struct evbuffer	*conn_output(struct conn *);
/* Write what is queued now if the socket takes it, else when it can. */
void		 conn_send(struct conn *);
/* Close once what is queued is written (or at once: now). */
void		 conn_finish(struct conn *, int now);
struct loop	*conn_loop(struct conn *);

/* SIGTERM: close idle connections, mark the rest to close when done. */
void	front_drain(struct loop *);
/* Drain over: cancel in-flight requests (shutdown), close the rest. */
void	front_stop(struct loop *);

#endif
