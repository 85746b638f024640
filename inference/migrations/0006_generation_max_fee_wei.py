import billing.fields
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("inference", "0005_stale_hold_sweep_moves_to_inference")]

    operations = [
        migrations.AddField(
            model_name="generation",
            name="max_fee_wei",
            field=billing.fields.WeiField(blank=True, null=True),
        ),
    ]
