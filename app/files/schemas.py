"""Response bodies for /v1/files."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class FileRead(BaseModel):
    id: uuid.UUID
    name: str
    content_type: str
    size_bytes: int
    sha256: str
    kind: str = Field(description="lora | image | zip | other: what the service can use it as")
    metadata: dict[str, Any]
    url: str = Field(description="the content, for its owner")
    created_at: datetime
