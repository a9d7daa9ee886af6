/*
 * admin.h: the admin listener: GET /metrics and GET /healthz.
 */
#ifndef FANOUTD_ADMIN_H
#define FANOUTD_ADMIN_H

struct event_base;
struct lset;
struct config;

/* draining: the process's drain flag, read atomically (/healthz 503);
 * current: the configuration in force (/metrics shows its servers). */
struct admin	*admin_new(struct event_base *, const struct config *,
		    const int *draining, struct config *const *current);
struct lset	*admin_set(struct admin *);
void		 admin_free(struct admin *);

#endif
