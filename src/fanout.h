/*
 * fanout.h: the modes of SPEC section 4 (proxy, all, first, hedge,
 * quorum): which legs to send when, and when the answer is decided.
 *
 * The request calls in at three points: when it is dispatched, when one
 * of its legs ended (whatever ended it), and when its own cancel cell
 * flipped. A mode decides by calling request_answer_leg(),
 * request_answer_envelope() or request_error(); losers still in flight are
 * cut with request_supersede() first.
 */
#ifndef FANOUTD_FANOUT_H
#define FANOUTD_FANOUT_H

#include "cancel.h"

struct request;
struct leg;

void	fanout_start(struct request *);
void	fanout_leg_ended(struct request *, struct leg *);
/* The request's cell flipped; 1 if the mode answered (partial = allow
 * at the deadline), 0 to let the request give its standard answer. */
int	fanout_cancelled(struct request *, enum cancel_reason);

#endif
