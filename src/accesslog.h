/*
 * accesslog.h: one JSON object per line per request (SPEC section 7).
 */
#ifndef FANOUTD_ACCESSLOG_H
#define FANOUTD_ACCESSLOG_H

struct request;

/* path: a file (appended to), "-" for stderr, "off". 0 / -1 (errno). */
int	accesslog_open(const char *path);
/* SIGUSR1: open the same path again (after a rotation). 0 / -1. */
int	accesslog_reopen(void);
void	accesslog_close(void);
void	accesslog_write(const struct request *, int status,
	    unsigned long long bytes);

#endif
