"""A local model registry in SQLite that answers like the SageMaker API.

It offers the subset of the boto3 `sagemaker` client that the project calls
(create/describe/list/update model packages), with the same request and response
shapes, so code such as `model_deploy/build.py` takes either one.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mlops_core.config import state_dir

APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
LOCAL_ACCOUNT = "000000000000"
BUSY_TIMEOUT_S = 60


class RegistryError(ValueError):
    """A request the registry refuses; the message names what is wrong."""


class LocalRegistry:
    def __init__(self, path: Path | None = None, region: str = "us-east-1"):
        self.path = Path(path or state_dir() / "registry.db")
        self.region = region
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS model_packages ("
                " grp TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,"
                " created TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (grp, version))"
            )

    def _connect(self) -> sqlite3.Connection:
        """Autocommit: each write takes its own BEGIN IMMEDIATE (see `_writing`); a locked
        database is waited for up to BUSY_TIMEOUT_S."""
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)

    @contextmanager
    def _writing(self):
        """A write transaction that holds the database's write lock from its first statement,
        so what it reads (the next version number) cannot change before it writes."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _arn(self, group: str, version: int) -> str:
        return f"arn:aws:sagemaker:{self.region}:{LOCAL_ACCOUNT}:model-package/{group}/{version}"

    def _parse(self, name: str) -> tuple[str, int]:
        """Accept an ARN or `group/version`, as SageMaker's ModelPackageName does."""
        tail = name.split(":model-package/")[-1]
        group, _, version = tail.rpartition("/")
        # isdecimal() alone takes other scripts' digits ('١' is 1) and isdigit() takes '²'.
        if not group or not (version.isascii() and version.isdecimal()):
            raise RegistryError(
                f"model package {name!r} is neither an ARN nor 'group/version'"
            )
        return group, int(version)

    def create_model_package(self, **request) -> dict:
        group = request.get("ModelPackageGroupName")
        if not group:
            raise RegistryError("ModelPackageGroupName is required")
        status = request.get("ModelApprovalStatus", "PendingManualApproval")
        if status not in APPROVAL_STATUSES:
            raise RegistryError(f"ModelApprovalStatus {status!r} is not one of {APPROVAL_STATUSES}")
        with self._writing() as db:
            row = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM model_packages WHERE grp = ?", (group,)
            ).fetchone()
            version = row[0] + 1
            now = datetime.now(UTC).isoformat()  # under the lock: creation order is version order
            body = {
                **request,
                "ModelPackageGroupName": group,
                "ModelPackageVersion": version,
                "ModelPackageArn": self._arn(group, version),
                "ModelPackageName": group,
                "ModelApprovalStatus": status,
                "ModelPackageStatus": "Completed",
                "CreationTime": now,
                "LastModifiedTime": now,
            }
            db.execute(
                "INSERT INTO model_packages VALUES (?, ?, ?, ?, ?)",
                (group, version, status, now, json.dumps(body)),
            )
        return {"ModelPackageArn": body["ModelPackageArn"]}

    def describe_model_package(self, ModelPackageName: str) -> dict:  # noqa: N803 (boto3 shape)
        with closing(self._connect()) as db:
            return self._body(db, *self._parse(ModelPackageName))

    @staticmethod
    def _body(db: sqlite3.Connection, group: str, version: int) -> dict:
        row = db.execute(
            "SELECT body FROM model_packages WHERE grp = ? AND version = ?", (group, version)
        ).fetchone()
        if row is None:
            raise RegistryError(f"model package {group}/{version} does not exist")
        return json.loads(row[0])

    def list_model_packages(
        self,
        ModelPackageGroupName: str,  # noqa: N803 (boto3 shape)
        ModelApprovalStatus: str | None = None,  # noqa: N803
        SortBy: str = "CreationTime",  # noqa: N803
        SortOrder: str = "Ascending",  # noqa: N803
        MaxResults: int = 100,  # noqa: N803
        NextToken: str | None = None,  # noqa: N803
    ) -> dict:
        if SortBy not in ("CreationTime", "Name"):
            raise RegistryError(f"SortBy {SortBy!r} is not supported")
        order = "DESC" if SortOrder == "Descending" else "ASC"
        offset = int(NextToken or 0)
        query = "SELECT body FROM model_packages WHERE grp = ?"
        args: list = [ModelPackageGroupName]
        if ModelApprovalStatus:
            query += " AND status = ?"
            args.append(ModelApprovalStatus)
        query += f" ORDER BY created {order}, version {order} LIMIT ? OFFSET ?"
        args += [MaxResults + 1, offset]
        with closing(self._connect()) as db:
            rows = [json.loads(r[0]) for r in db.execute(query, args)]
        summaries = [
            {
                key: body[key]
                for key in (
                    "ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn",
                    "CreationTime", "ModelPackageStatus", "ModelApprovalStatus",
                )
            }
            for body in rows[:MaxResults]
        ]
        result = {"ModelPackageSummaryList": summaries}
        if len(rows) > MaxResults:
            result["NextToken"] = str(offset + MaxResults)
        return result

    def update_model_package(
        self,
        ModelPackageArn: str,  # noqa: N803 (boto3 shape)
        ModelApprovalStatus: str,  # noqa: N803
        ApprovalDescription: str = "",  # noqa: N803
    ) -> dict:
        if ModelApprovalStatus not in APPROVAL_STATUSES:
            raise RegistryError(
                f"ModelApprovalStatus {ModelApprovalStatus!r} is not one of {APPROVAL_STATUSES}"
            )
        group, version = self._parse(ModelPackageArn)
        with self._writing() as db:
            body = self._body(db, group, version)
            body.update(
                ModelApprovalStatus=ModelApprovalStatus,
                ApprovalDescription=ApprovalDescription,
                LastModifiedTime=datetime.now(UTC).isoformat(),
            )
            db.execute(
                "UPDATE model_packages SET status = ?, body = ? WHERE grp = ? AND version = ?",
                (ModelApprovalStatus, json.dumps(body), group, version),
            )
        return {"ModelPackageArn": body["ModelPackageArn"]}
