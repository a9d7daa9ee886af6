/*
 * log.h: the error log. One line per event on stderr:
 *	2026-12-07T04:15:02.123Z LEVEL message key=value ...
 * or, when stderr is journald's stream, with the syslog priority in front
 * instead of the time:
 *	<6>LEVEL message key=value ...
 */
#ifndef FANOUTD_LOG_H
#define FANOUTD_LOG_H

#include <stdarg.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Before the first line: journald's stream or not. */
void	log_init(void);
void	log_set_level(enum log_level);
int	log_enabled(enum log_level);

void	log_error(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
/* A report of whole lines as it is ("FILE:LINE: message"), each given
 * LEVEL's priority when stderr is journald's stream. */
void	log_text(enum log_level, const char *);
void	fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

#endif
