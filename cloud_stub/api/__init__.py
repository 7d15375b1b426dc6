"""The cloud stub's HTTP API: one router per OpenAPI tag, dependencies, and the request/response schemas."""

from cloud_stub.api import auditing, deployment, development, service, verification

ROUTERS = (service.router, deployment.router, development.router, auditing.router, verification.router)

__all__ = ["ROUTERS"]
