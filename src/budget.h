/*
 * budget.h: how many extra attempts a route may send (fanoutd(8), HEALTH
 * AND BUDGETS): hedges after a request's first leg and retries, at most
 * budget percent of the route's requests of the last 10 s plus budget_min
 * a second. The count is the route's struct route_state (config.h), shared
 * by every worker and kept by a reload.
 */
#ifndef FANOUTD_BUDGET_H
#define FANOUTD_BUDGET_H

struct route_conf;

enum budget_kind { BUDGET_HEDGE, BUDGET_RETRY };

/* A request of the route was dispatched. */
void	budget_request(const struct route_conf *);
/* May one more extra attempt go? 1: yes, and it is counted as sent; 0:
 * over budget, counted as skipped. */
int	budget_take(const struct route_conf *, enum budget_kind);
/* Whether the route can send extra attempts at all (else nothing needs
 * counting). */
int	budget_applies(const struct route_conf *);

#endif
