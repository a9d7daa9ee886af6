/*
 * leg.h: one leg, the request's call to one upstream, as data.
 *
 * request.c owns the legs of its requests: it starts them, records how
 * each ended and frees them. The modes (fanout.c), the envelope
 * (envelope.c) and the access log (accesslog.c) are handed the array and
 * read it; none of them changes a leg or looks at the request behind it.
 *
 * A leg goes LEG_IDLE -> LEG_RUNNING -> LEG_DONE, each step at most once;
 * once LEG_DONE, outcome says how it ended. A leg never sent stays
 * LEG_IDLE (mode hedge decided before its turn, or mode proxy's ring
 * needed no more attempts).
 */
#ifndef FANOUTD_LEG_H
#define FANOUTD_LEG_H

#include <stdint.h>

#include "cancel.h"
#include "http.h"
#include "upstream.h"

struct request;
struct upstream_conf;
struct server_conf;
struct transfer;
struct evbuffer;

enum leg_state {
	LEG_IDLE,	/* not sent (yet) */
	LEG_RUNNING,
	LEG_DONE,
};

enum leg_outcome {
	LEG_OK,		/* whole response, 2xx */
	LEG_STATUS,	/* whole response, other status */
	LEG_FAILED,	/* transport error: see error */
	LEG_CANCELLED,	/* see cancel reason */
};

struct leg {
	struct request			*req;		/* its owner, for request.c */
	const struct upstream_conf	*up;
	struct cancel			 cancel;	/* child of req->cancel */
	struct server_conf		*server;	/* picked; NULL: none */
	struct transfer			*xfer;		/* while LEG_RUNNING */
	enum leg_state			 state;
	enum leg_outcome		 outcome;
	enum transfer_error		 error;
	const char			*detail;	/* curl's, static */
	int				 status;
	struct http_headers		 headers;
	struct http_headers		 trailers;	/* after the body */
	struct evbuffer			*body;		/* NULL until one comes */
	uint64_t			 started_us;
	uint64_t			 duration_us;
	uint64_t			 wasted_us;	/* cancelled in flight */
	int				 verdict;	/* enum health_verdict */
};

#endif
