/*
 * notify.h: the service manager protocol (sd_notify), when built with
 * libsystemd and started with NOTIFY_SOCKET set; otherwise no-ops.
 */
#ifndef FANOUTD_NOTIFY_H
#define FANOUTD_NOTIFY_H

struct event_base;

/* Arms the WATCHDOG=1 timer on base when WatchdogSec is set. */
void	notify_init(struct event_base *);
void	notify_free(void);
void	notify_ready(void);
void	notify_reloading(void);
void	notify_stopping(void);

#endif
