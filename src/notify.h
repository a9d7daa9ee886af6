/*
 * notify.h: the service manager protocol (sd_notify), when built with
 * libsystemd and started with NOTIFY_SOCKET set; otherwise no-ops.
 */
#ifndef FANOUTD_NOTIFY_H
#define FANOUTD_NOTIFY_H

#include <stdint.h>

struct event_base;

/*
 * Arms the WATCHDOG=1 timer on base when WatchdogSec is set. The watchdog
 * is petted only while alive(max_ms) says every event loop turned within
 * max_ms: a worker stuck in a loop of its own gets the process restarted.
 */
void	notify_init(struct event_base *, int (*alive)(uint64_t max_ms));
void	notify_free(void);
void	notify_ready(void);
void	notify_reloading(void);
void	notify_stopping(void);

#endif
