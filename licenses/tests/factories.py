import factory
from django.contrib.auth import get_user_model

from licenses.models import Agency, License, Membership


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")

    @factory.post_generation
    def password(obj, create, extracted, **kwargs):  # noqa: N805 - factory_boy hook signature
        obj.set_password(extracted or "pass-word-123")
        if create:
            obj.save(update_fields=["password"])


class AgencyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agency

    name = factory.Sequence(lambda n: f"Agency {n}")
    slug = factory.Sequence(lambda n: f"agency-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    agency = factory.SubFactory(AgencyFactory)
    role = Membership.Role.EDITOR


class LicenseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = License

    agency = factory.SubFactory(AgencyFactory)
    client_name = factory.Sequence(lambda n: f"Client {n}")
    allowed_domains = factory.LazyFunction(lambda: ["shop.example.com", "*.example.org", "localhost", "127.0.0.1"])
