"""Local stand-ins for a whole environment: Prefect server, embedded Postgres/Redis, the demo
stack. Used by the demo, the tests and game days; production code never imports this."""
