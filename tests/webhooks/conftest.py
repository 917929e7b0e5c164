# Real server processes sharing PostgreSQL, Redis and S3, as the run engine's tests use them.
from tests.runs.test_processes import database_url, deployment, servers  # noqa: F401
