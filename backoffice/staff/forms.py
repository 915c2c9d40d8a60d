from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length

from backoffice.staff.models import Role

ROLE_CHOICES = [SelectChoice(role.value, role.value.replace("_", " ").capitalize()) for role in Role]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=255)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class LogoutForm(FlaskForm):
    pass


class StaffCreateForm(FlaskForm):
    email = EmailField(
        "Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=255)]
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=255)])
    role = SelectField("Role", choices=ROLE_CHOICES, validators=[DataRequired()])
    password = PasswordField(
        "Initial password",
        validators=[DataRequired(), Length(max=128)],
        description="At least 12 characters with 3 lower-case letters, an upper-case letter, a digit and a symbol.",
    )


class StaffEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=255)])
    role = SelectField("Role", choices=ROLE_CHOICES, validators=[DataRequired()])
    active = BooleanField("Active", description="Deactivating signs the user out everywhere at once.")
