/*
 * accesslog.h: the access log of fanoutd(8), ACCESS LOG: one JSON object
 * per line per request, written from the fields it is handed (it never
 * sees the request), and the log file itself (open, reopen, close).
 */
#ifndef FANOUTD_ACCESSLOG_H
#define FANOUTD_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct leg;

/* One request's line, in the order written. */
struct accesslog_entry {
	const char		*request_id;
	const char		*client;
	const char		*method;
	const char		*target;	/* as received; NULL: none */
	size_t			 targetlen;
	const char		*proto;		/* "HTTP/1.1": 8 characters */
	int			 tls;
	const char		*route;		/* NULL: none matched */
	int			 status;
	unsigned long long	 bytes;
	uint64_t		 started_us;	/* duration_ms runs from here to
						   the write, now_us() clock */
	const char		*cancel_reason;	/* NULL: not cancelled */
	int			 grpc_status;	/* -1: not a gRPC call */
	/* One "upstreams" entry per leg, but for those never given an
	 * upstream (mode proxy's attempts not needed). */
	const struct leg	*legs;
	size_t			 nlegs;
};

/* path: a file (appended to), "-" for stderr, "off". 0 / -1 (errno). */
int	accesslog_open(const char *path);
/* SIGUSR1: open the same path again (after a rotation). 0 / -1. */
int	accesslog_reopen(void);
void	accesslog_close(void);
void	accesslog_write(const struct accesslog_entry *);

#endif
