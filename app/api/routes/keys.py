"""API keys: create (the secret is shown once), list, revoke."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Response, status

from app.api.deps import CurrentUser, SessionDep
from app.crud import api_keys
from app.schemas.common import error_responses
from app.schemas.keys import ApiKeyCreate, ApiKeyCreated, ApiKeyOut

router = APIRouter(prefix="/keys", tags=["api keys"])


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    operation_id="create_key",
    responses={
        201: {"links": {"RevokeKey": {"operationId": "revoke_key", "parameters": {"key_id": "$response.body#/id"}}}},
        **error_responses(400, 401, 409, 429),
    },
)
def create_key(body: ApiKeyCreate, user: CurrentUser, session: SessionDep) -> ApiKeyCreated:
    """A new key for your account. The response holds the secret; it cannot be shown again."""
    try:
        key, secret = api_keys.create(session, user, body.name)
    except api_keys.TooManyKeys as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return ApiKeyCreated.model_validate({**ApiKeyOut.model_validate(key).model_dump(), "key": secret})


@router.get("", response_model=list[ApiKeyOut], operation_id="list_keys", responses=error_responses(401, 429))
def list_keys(user: CurrentUser, session: SessionDep, include_revoked: bool = False) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in api_keys.list_for(session, user, include_revoked)]


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    operation_id="revoke_key",
    responses=error_responses(401, 404, 429),
)
def revoke_key(key_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Revoke a key at once; requests with it get 401 from now on."""
    if api_keys.revoke(session, user, key_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such key")
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
