/*
 * upstream.h: upstream transfers on libcurl's multi interface, driven by
 * the worker's event_base (CURLMOPT_SOCKETFUNCTION / TIMERFUNCTION).
 *
 * A transfer ends exactly once: either its done callback runs (from the
 * event loop, never from inside a curl callback, with the easy handle
 * already removed from the multi), or the owner aborts it with
 * transfer_abort(), after which no callback runs. Either way the transfer
 * is freed by this module.
 */
#ifndef FANOUTD_UPSTREAM_H
#define FANOUTD_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct event_base;
struct evbuffer;
struct upstream_conf;
struct upstreams;
struct transfer;

enum transfer_error {
	XFER_OK = 0,		/* a whole response arrived (any status) */
	XFER_TIMEOUT,
	XFER_CONNECT,
	XFER_RESET,
	XFER_PROTOCOL,
	XFER_TOO_LARGE,
	XFER_NO_SOCKET,		/* out of descriptors: our problem, not theirs */
	XFER_UNAVAILABLE,	/* no server of the upstream to send it to */
};

struct transfer_result {
	enum transfer_error	 error;
	const char		*detail;	/* curl's words, for the log */
	int			 status;
	struct http_headers	*headers;	/* the final response's */
	struct http_headers	*trailers;	/* its trailer fields */
	struct evbuffer		*body;		/* NULL: none kept; the callee
						 * may take it (and set NULL) */
	uint64_t		 duration_us;
};

typedef void	(*transfer_done_cb)(struct transfer *,
		    struct transfer_result *, void *);

/*
 * Streaming: the response is handed over as it arrives instead of being
 * collected. Both run inside curl's callbacks, so they must not call into
 * curl (no abort, no resume) nor free anything curl may still reach.
 * head: the final response head (1xx skipped); content_length is -1 when
 * unknown. data: a piece of the body; return 0 when taken, 1 to pause the
 * transfer (the piece is delivered again after transfer_resume()), -1 to
 * fail it as too large (XFER_TOO_LARGE).
 */
/*
 * A request body that is still arriving: read() copies up to len bytes
 * into buf and returns how many; 0 with *eof set ends the body, 0 without
 * pauses the upload until transfer_resume_send(). It runs inside curl's
 * read callback: the same rules as a stream's callbacks.
 */
struct transfer_source {
	size_t	(*read)(void *, char *buf, size_t len, int *eof);
	long long size;		/* -1: unknown, sent chunked */
};

struct transfer_stream {
	void	(*head)(void *, int status, const struct http_headers *,
		    long long content_length);
	int	(*data)(void *, const char *, size_t);
};

struct transfer_request {
	const struct upstream_conf	*up;
	const char			*url;		/* the server's; NULL: up's */
	const char			*method;
	const char			*path;		/* path and query, "/" first */
	size_t				 pathlen;
	const struct http_headers	*headers;	/* to send, as they are */
	const void			*body;		/* must outlive the transfer */
	size_t				 bodylen;
	int				 has_body;
	uint64_t			 timeout_ms;	/* 0: the upstream's */
	int				 any_size;	/* no max_response_size */
	const struct transfer_stream	*stream;	/* NULL: collect */
	const struct transfer_source	*source;	/* NULL: body above */
};

/* pool: how many idle upstream connections curl may keep. */
struct upstreams	*upstreams_new(struct event_base *, unsigned long pool);
void			 upstreams_free(struct upstreams *);

struct transfer	*transfer_start(struct upstreams *,
		    const struct transfer_request *, transfer_done_cb, void *);
/* Abort an in-flight transfer: its connection is closed, nothing runs.
 * Returns the number of response bytes thrown away. */
size_t		 transfer_abort(struct transfer *);
/* Go on after a stream's data callback asked for a pause. Not from
 * inside a curl callback. */
void		 transfer_resume(struct transfer *);
/* Go on sending after a source had nothing. Not from inside curl. */
void		 transfer_resume_send(struct transfer *);

const char	*transfer_error_name(enum transfer_error);

#endif
