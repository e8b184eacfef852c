"""Staff accounts, made by admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.deps import SessionDep, require
from app.schemas.problem import problem_responses
from app.schemas.users import StaffCreate, UserOut
from services.users import service as users
from services.users.models import Role, User

router = APIRouter(prefix="/v1", tags=["users"])

AdminUser = Annotated[User, Depends(require(Role.admin))]


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=problem_responses(400, 401, 403, 409, 413, 422),
)
async def create_staff_user(body: StaffCreate, session: SessionDep, _: AdminUser) -> UserOut:
    county = body.county_code.ljust(12, "0") if body.county_code else None
    user = await users.create_staff(
        session,
        users.NewStaff(
            email=body.email,
            password=body.password,
            role=Role(body.role),
            display_name=body.display_name,
            phone=body.phone,
            county_code=county,
            cooperative_id=body.cooperative_id,
            site_id=body.site_id,
        ),
    )
    return UserOut.model_validate(user)
