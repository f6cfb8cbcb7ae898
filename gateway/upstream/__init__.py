"""The egress side, read top to bottom as Envoy's router path.

forward.py      GatewayForwarder (the pipeline's Forwarder) and build_forwarder (app.py calls it)
router.py       one upstream: admit (size, deadline, rate limit, bulkhead) → attempts with retries
ratelimit*.py   token buckets per upstream and tenant; local, or shared through Redis with a Lua script
bulkhead.py     max concurrent + max queued per upstream; overflow fails fast
retry.py        what is retried, full-jitter backoff, Retry-After, the retry budget
cluster.py      host selection: open breakers out, ejected/unhealthy hosts avoided, balancer picks
balancer.py     least_request (P2C, default), round_robin, weighted/random
breaker.py      CircuitBreaker per endpoint (resilience4j semantics)
outlier.py      passive outlier detection (consecutive failures eject; growing, capped ejection)
health.py       optional active health checks
pool.py         ConnectionPool: per-endpoint slots over keep-alive aiohttp connectors
http.py         one HTTP exchange with a bounded read; aiohttp's exceptions end here
outcome.py      how an attempt failed, in gateway.errors terms
idempotency.py  the dedupe store behind idempotency_key (memory or Redis)
config.py       the upstreams file (pydantic, at the edge); policies.py resolves it into frozen policies
tls.py          TlsContextProvider, which the certificate manager implements
snapshot.py     the live-state document (/admin/upstreams): each part made by its component's snapshot()
"""
