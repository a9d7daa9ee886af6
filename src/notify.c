/*
 * notify.c: READY=1, RELOADING=1, STOPPING=1 and WATCHDOG=1.
 *
 * The watchdog is petted from a timer on the event loop itself, so a loop
 * that is stuck stops petting and systemd restarts the process.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "notify.h"

static struct event	*watchdog;

#ifdef HAVE_SYSTEMD
static void
notify_send(const char *msg)
{
	int	rv;

	if ((rv = sd_notify(0, msg)) < 0)
		log_debug("sd_notify failed msg=\"%s\" error=%d", msg, rv);
}

static uint64_t	watchdog_ms;	/* half the watchdog period */
static int	(*loops_alive)(uint64_t);

/*
 * The main loop pets only when every worker's loop turned lately too: a
 * worker stuck in a loop of its own gets the process restarted as well.
 */
static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	if (loops_alive(watchdog_ms))
		notify_send("WATCHDOG=1");
}
#else
static void
notify_send(const char *msg)
{
	(void)msg;
}
#endif

void
notify_init(struct event_base *base, int (*alive)(uint64_t))
{
#ifdef HAVE_SYSTEMD
	uint64_t	usec = 0;
	struct timeval	tv;

	loops_alive = alive;
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return;
	/* Twice per period, as sd_watchdog_enabled(3) advises. */
	usec /= 2;
	watchdog_ms = usec / 1000 > 200 ? usec / 1000 : 200;
	tv.tv_sec = usec / 1000000;
	tv.tv_usec = usec % 1000000;
	if ((watchdog = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL)) ==
	    NULL || event_add(watchdog, &tv) == -1) {
		log_warnx("cannot arm the watchdog timer");
		return;
	}
	log_info("watchdog enabled interval_ms=%llu",
	    (unsigned long long)usec / 1000);
#else
	(void)base;
	(void)alive;
#endif
}

void
notify_free(void)
{
	if (watchdog != NULL)
		event_free(watchdog);
	watchdog = NULL;
}

void
notify_ready(void)
{
	notify_send("READY=1\nSTATUS=serving");
}

void
notify_reloading(void)
{
	struct timespec	ts;
	char		msg[96];

	/* MONOTONIC_USEC lets Type=notify-reload (systemd 253) match it up. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
	notify_send(msg);
}

void
notify_stopping(void)
{
	notify_send("STOPPING=1\nSTATUS=draining");
}

