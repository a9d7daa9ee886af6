/*
 * request.h: one request's life: route, legs to upstreams, answer, log.
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
 */
#ifndef FANOUTD_REQUEST_H
#define FANOUTD_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "cancel.h"
#include "http.h"
#include "leg.h"
#include "loop.h"
#include "upstream.h"

struct front;
struct loop;
struct config;
struct route_conf;
struct upstream_conf;
struct evbuffer;
struct event;

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
	struct evbuffer		*body;
	int			 has_body;
	int			 reject;	/* status to answer with, or 0 */
	const char		*reject_error;

	uint64_t		 started_us;	/* first byte */
	uint64_t		 deadline_ms;	/* absolute, now_ms() clock */
	struct event		*deadline_timer;
	uint64_t		 flip_us;

	struct leg		*legs;
	size_t			 nlegs;
	unsigned		 legs_running;
	unsigned		 legs_cancelled;
	unsigned		 decided:1;	/* answer chosen: losers are moot */
	unsigned		 starting:1;	/* an action's legs being sent */
	unsigned		 streaming:1;	/* a leg's answer is under way */
	unsigned		 body_streaming:1; /* legs run, body still coming */
	struct transfer_source	 source;	/* how legs read that body */
	struct event		*hedge_timer;	/* a mode's FANOUT_TIMER_ARM */
};

struct request	*request_new(struct loop *, struct front *, struct config *,
		    const char *client);
/* "HTTP/1.0", "HTTP/1.1" or "HTTP/2.0", for logs and metrics. */
const char	*request_proto(const struct request *);
/* The head has been read: route, deadline, method check. */
void		 request_head_done(struct request *);
/* The whole request has been read: answer or send it upstream. */
void		 request_dispatch(struct request *);
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

/*
 * Mode proxy sends a request body as it arrives. The front end dispatches
 * such a request at the end of its head, tells it of more body with
 * request_body_more() and of its end with request_body_done(), and stops
 * reading the client while request_body_full(); the request calls
 * conn_body_resume() once its legs have taken enough.
 */
int		 request_streams_body(const struct request *);
void		 request_body_more(struct request *);
void		 request_body_done(struct request *);
int		 request_body_full(const struct request *);

#endif
