"""Where the CPU time of the ResNet-32 step goes, JAX vs PyTorch: forward, forward+backward, one conv.

    python benchmarks/cpu_gap.py      # needs torch (optional extra); batch 128, medians of 5-20

A diagnosis for issue 6 (absgd_jax is ~3x slower than PyTorch on a 2-core CPU), not a
benchmark of ABSGD: the ABSGD weighting is not involved.
"""
import time, statistics, numpy as np, jax, jax.numpy as jnp, optax, torch, sys
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from vs_pytorch import torch_resnet32
from absgd_jax.models import create_model
torch.set_num_threads(2)
B=128
x=np.random.default_rng(0).normal(size=(B,32,32,3)).astype(np.float32); y=np.random.default_rng(1).integers(0,10,B)
m=create_model("resnet32",10); v=m.init(jax.random.key(0), jnp.asarray(x[:1]), train=False)
xj, yj = jnp.asarray(x), jnp.asarray(y)
def loss(p, bs):
  lg,_=m.apply({"params":p,"batch_stats":bs}, xj, train=True, mutable=["batch_stats"]); return optax.softmax_cross_entropy_with_integer_labels(lg,yj).mean()
fwd=jax.jit(loss); bwd=jax.jit(jax.grad(loss))
def t(f, *a, n=5):
  jax.block_until_ready(f(*a)); r=[]
  for _ in range(n):
    t0=time.perf_counter(); jax.block_until_ready(f(*a)); r.append(time.perf_counter()-t0)
  return statistics.median(r)
p,bs=v["params"],v["batch_stats"]
print("jax fwd %.3f fwd+bwd %.3f" % (t(fwd,p,bs), t(bwd,p,bs)))
net=torch_resnet32(torch).to(memory_format=torch.channels_last); xt=torch.from_numpy(x).permute(0,3,1,2).contiguous(memory_format=torch.channels_last); yt=torch.from_numpy(y).long()
def tf(n=5, back=False):
  r=[]
  for i in range(n+1):
    t0=time.perf_counter(); l=torch.nn.functional.cross_entropy(net(xt),yt)
    if back: l.backward()
    r.append(time.perf_counter()-t0)
  return statistics.median(r[1:])
print("torch fwd %.3f fwd+bwd %.3f" % (tf(), tf(back=True)))
w=jnp.asarray(np.random.default_rng(2).normal(size=(3,3,16,16)).astype(np.float32)); xin=jnp.asarray(np.random.default_rng(3).normal(size=(B,32,32,16)).astype(np.float32))
conv=jax.jit(lambda a,b: jax.lax.conv_general_dilated(a,b,(1,1),"SAME",dimension_numbers=("NHWC","HWIO","NHWC")))
print("jax conv3x3 16ch fwd %.4f" % t(conv,xin,w,n=20))
c=torch.nn.Conv2d(16,16,3,padding=1,bias=False).to(memory_format=torch.channels_last); xi=torch.randn(B,16,32,32).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
  r=[]
  for i in range(21):
    t0=time.perf_counter(); c(xi); r.append(time.perf_counter()-t0)
print("torch conv3x3 16ch fwd %.4f" % statistics.median(r[1:]))
