"""Several funnel-server replicas behind a load balancer, state in Redis."""
