import sys, optax, absgd_jax
from absgd_jax.train import trainer, make_config, Trainer
style = sys.argv[1]
if style == "torch":
  trainer.absgd_jax.absgd = lambda lr, momentum, weight_decay: optax.chain(
      optax.add_decayed_weights(weight_decay), optax.trace(decay=momentum), optax.scale_by_learning_rate(lr))
c = make_config('cifar10-lt', image_size=16, crop_padding=2, model='resnet8', epochs=28, warmup_epochs=1,
                lr_decay_epochs=(20, 25), method='sgd', eval_every=4, checkpoint=False, out_dir='/tmp/pilot/'+style)
t = Trainer(c, progress=False, log=False); t.fit()
for r in t.history: print(r['epoch'], round(r['train_loss'], 4), round(r['train_acc'], 4), r.get('test_acc'), flush=True)
