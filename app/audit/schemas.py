from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEventRead(BaseModel):
    id: uuid.UUID
    action: str = Field(description="What happened, in stable snake_case: key_created, subject_deleted, ...")
    actor: str = Field(description="Who: `api_key:<key prefix>`, `cli` or `system`; never the key itself")
    target_type: str | None = Field(description="What kind of thing it happened to: subject, photo, model, ...")
    target_id: uuid.UUID | None
    ip_address: str | None = Field(description="The client's address, for requests")
    details: dict[str, Any] = Field(description="A few plain values; never secrets or image data")
    created_at: datetime
