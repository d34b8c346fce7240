"""``/api/v1/replication``: host-level replication operations (TestReplicationConnection for now)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from standby.api.deps import LanguageDep, ServicesDep
from standby.api.jobs import job_json, job_url
from standby.domain.enums import AuthenticationType
from standby.engine.connection import ConnectionTarget

router = APIRouter(prefix="/api/v1/replication", tags=["replication"])


class TestConnectionRequest(BaseModel):
    """The in-parameters of ``Msvm_ReplicationService.TestReplicationConnection``."""

    __test__ = False  # not a pytest class, despite the name

    recovery_connection_point: str = Field(min_length=1, max_length=255,
                                           description="host name or address of the recovery server")
    recovery_server_port: int = Field(ge=1, le=65535, description="its replication (HTTPS) port")
    authentication_type: int = Field(default=int(AuthenticationType.CERTIFICATE),
                                     description="1 Kerberos (not supported), 2 certificate")
    certificate_thumbprint: str = Field(default="", max_length=64)
    bypass_proxy_server: bool = False


@router.post("/test-connection", status_code=202, summary="TestReplicationConnection (async)")
def test_connection(
    body: TestConnectionRequest, services: ServicesDep, language: LanguageDep
) -> JSONResponse:
    """Start a JobType 115 job that probes the recovery server; 202 with the job and its URL."""
    target = ConnectionTarget(
        connection_point=body.recovery_connection_point,
        port=body.recovery_server_port,
        authentication_type=body.authentication_type,
        certificate_thumbprint=body.certificate_thumbprint,
        bypass_proxy_server=body.bypass_proxy_server,
    )
    job = services.connection_tester.submit(target)
    return JSONResponse(
        job_json(job, language, services.clock(), services.jobs.describe(job, language)),
        status_code=202,
        headers={"location": job_url(job.job_id)},
    )
