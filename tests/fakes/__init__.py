"""In-process fakes of external services, each following ../shared/reference/api-contracts.md.

``base.FakeService`` holds what they share (httpx transport, request log, ``fail_next`` faults, fired
webhooks, the ``RemoteTicket`` view the connector harness compares); one module per service.
"""
