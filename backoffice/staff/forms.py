from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import AnyOf, DataRequired, Email, Length

from backoffice.i18n import LANGUAGES
from backoffice.staff.models import Role

ROLE_LABELS = {
    Role.LEGAL_REVIEWER: _l("Legal reviewer"),
    Role.CALL_AGENT: _l("Call agent"),
    Role.ASSOCIATION_CLERK: _l("Association clerk"),
    Role.SUPERVISOR: _l("Supervisor"),
    Role.ADMIN: _l("Admin"),
}


def role_label(role: Role | str) -> str:
    """A role's name in the reader's language."""
    return str(ROLE_LABELS[Role(role)])


ROLE_CHOICES = [SelectChoice(role.value, ROLE_LABELS[role]) for role in Role]
LANGUAGE_CHOICES = [SelectChoice("es", "Español"), SelectChoice("en", "English")]


class LoginForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=255)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])


class LogoutForm(FlaskForm):
    pass


class CodeForm(FlaskForm):
    """The second step: a code from the authenticator app, or a recovery code."""

    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=64)])


class ReauthenticateForm(FlaskForm):
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=64)])


class LanguageForm(FlaskForm):
    language = StringField(validators=[DataRequired(), AnyOf(LANGUAGES)])


class StaffCreateForm(FlaskForm):
    email = EmailField(
        _l("Email"), validators=[DataRequired(), Email(check_deliverability=False), Length(max=255)]
    )
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=255)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, validators=[DataRequired()])
    password = PasswordField(
        _l("Initial password"),
        validators=[DataRequired(), Length(max=128)],
        description=_l(
            "At least 12 characters with 3 lower-case letters, an upper-case letter, a digit and a symbol."
        ),
    )


class StaffEditForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=255)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, validators=[DataRequired()])
    language = SelectField(_l("Language"), choices=LANGUAGE_CHOICES, validators=[DataRequired()])
    active = BooleanField(_l("Active"), description=_l("Deactivating signs the user out everywhere at once."))
