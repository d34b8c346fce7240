"""Msvm_ConcreteJob: every kept job of ``engine.jobs.JobManager`` (hyperv-api §7), in both namespaces.

Times are CIM datetimes (UTC), ElapsedTime and TimeBeforeRemoval CIM intervals. Texts follow the request's
language: the description and JobStatus, ErrorDescription and ErrorSummaryDescription (from the error's
catalog id, falling back to the English text). Methods: GetError / GetErrorEx (an embedded ``Msvm_Error`` for
a failed job, NULL / empty otherwise; return 0), RequestStateChange (4 terminate, 5 kill: 0 done, 4097 the job
already ended, 1 not cancellable or any other requested state).
"""

from __future__ import annotations

from collections.abc import Iterable

from pywbem import CIMInstance

from standby import i18n
from standby.cim import convert, naming
from standby.cim.backend import RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, done
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.entities import Job
from standby.domain.enums import JobRequestedState, JobState, StateChangeCode


def _description(runtime: CimRuntime, job: Job, language: str) -> str:
    return runtime.engine.jobs.describe(job, language)


def error_description(job: Job, language: str) -> str:
    """ErrorDescription in ``language`` ("" for a job without an error)."""
    if not job.error_code:
        return ""
    # These names are error_text's own parameters; an error argument of that name must not clash.
    args = {k: v for k, v in job.error_args if k not in {"code", "message", "message_id", "language"}}
    message_id = job.error_message_id or "StandbyError"
    return i18n.error_text(message_id, language, job.error_description, code=job.error_code, **args)


def error_summary(job: Job, language: str) -> str:
    """ErrorSummaryDescription: the name of the error code in ``language``."""
    if not job.error_code:
        return ""
    if language == "en" and job.error_summary:
        return job.error_summary
    return i18n.return_code_text(job.error_code, language)


def job_instance(runtime: CimRuntime, namespace: str, job: Job, language: str) -> CIMInstance:
    """A job as an Msvm_ConcreteJob."""
    failed = job.state == JobState.EXCEPTION
    type_text = i18n.job_type_text(int(job.job_type), language)
    return make_instance(runtime.schema, namespace, naming.CONCRETE_JOB, {
        "InstanceID": job.instance_id,
        "Name": type_text,
        "Caption": type_text,
        "ElementName": type_text,
        "Description": _description(runtime, job, language),
        "JobType": job.job_type,
        "JobState": job.state,
        "JobStatus": i18n.job_state_text(int(job.state), language),
        "PercentComplete": job.percent_complete,
        "ErrorCode": job.error_code,
        "ErrorDescription": error_description(job, language),
        "ErrorSummaryDescription": error_summary(job, language),
        "Cancellable": job.cancellable,
        "DeleteOnCompletion": job.delete_on_completion,
        "TimeBeforeRemoval": job.time_before_removal,
        "TimeSubmitted": job.submitted_at,
        "StartTime": job.started_at,
        "TimeOfLastStateChange": job.state_changed_at,
        "ElapsedTime": job.elapsed(runtime.clock()),
        "Owner": job.owner,
        "Priority": 0,
        "OperationalStatus": [6] if failed else [2],
        "StatusDescriptions": ["Error"] if failed else ["OK"],
    })


def _instances(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for job in runtime.engine.inventory.jobs():
        yield job_instance(runtime, namespace, job, ctx.language)


def _job(call: MethodCall) -> Job:
    return call.runtime.engine.inventory.job(str(naming.key(call.target_instance, "InstanceID")))


def _error(call: MethodCall, job: Job) -> CIMInstance | None:
    if job.state != JobState.EXCEPTION and not job.error_code:
        return None
    language = call.ctx.language
    return convert.error_instance(
        call.runtime.schema, call.namespace,
        message_id=job.error_message_id or "StandbyError",
        message=error_description(job, language) or error_summary(job, language),
        arguments=tuple(value for _, value in job.error_args),
        source=str(naming.job_path(call.namespace, job.job_id)),
    )


def get_error(call: MethodCall) -> MethodResult:
    """GetError → Error (embedded Msvm_Error, NULL when the job did not fail)."""
    return done({"Error": _error(call, _job(call))})


def get_error_ex(call: MethodCall) -> MethodResult:
    """GetErrorEx → Errors[] (empty when the job did not fail)."""
    error = _error(call, _job(call))
    return done({"Errors": [] if error is None else [error]})


def request_state_change(call: MethodCall) -> MethodResult:
    """RequestStateChange: 4 terminates and 5 kills a cancellable job; other states are not supported."""
    job = _job(call)
    requested = int(call.param("RequestedState") or 0)
    if requested not in (JobRequestedState.TERMINATE, JobRequestedState.KILL):
        return MethodResult(int(StateChangeCode.NOT_SUPPORTED))
    kill = requested == JobRequestedState.KILL
    return MethodResult(int(call.runtime.engine.jobs.cancel(job.job_id, kill)))


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register Msvm_ConcreteJob and its methods."""
    registry.add_provider(FunctionProvider(
        naming.CONCRETE_JOB, naming.BOTH, lambda ns, ctx: _instances(runtime, ns, ctx)))
    registry.add_method(naming.CONCRETE_JOB, "GetError", get_error)
    registry.add_method(naming.CONCRETE_JOB, "GetErrorEx", get_error_ex)
    registry.add_method(naming.CONCRETE_JOB, "RequestStateChange", request_state_change)
