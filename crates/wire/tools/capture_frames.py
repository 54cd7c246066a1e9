# Regenerates the kernel frames in src/tests/frames.rs: run as root with
# `unshare -n python3 capture_frames.py` (private netns + TAP; no host state touched).
import fcntl, os, socket, struct, select, subprocess, time, sys
TUNSETIFF = 0x400454ca
IFF_TAP = 0x0002; IFF_NO_PI = 0x1000
def sh(c): subprocess.run(c, shell=True, check=True)
sh("ip link set lo up")
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"t0", IFF_TAP | IFF_NO_PI))
sh("ip link set t0 address 02:00:00:00:00:01")
sh("sysctl -qw net.ipv6.conf.t0.accept_dad=0 net.ipv6.conf.all.forwarding=0")
sh("ip link set t0 up")
sh("ip addr add 192.0.2.1/24 dev t0")
sh("ip -6 addr add 2001:db8::1/64 dev t0 nodad")
PEER_MAC = bytes.fromhex("020000000002")
sh("ip neigh add 192.0.2.2 lladdr 02:00:00:00:00:02 dev t0")
sh("ip -6 neigh add 2001:db8::2 lladdr 02:00:00:00:00:02 dev t0")
os.set_blocking(fd, False)
out = {}
def drain(t=0.3):
    frames = []
    end = time.time() + t
    while time.time() < end:
        r,_,_ = select.select([fd],[],[],0.05)
        if r:
            try: frames.append(os.read(fd, 65536))
            except BlockingIOError: pass
    return frames
drain(0.5)
# 1. TCP SYN from kernel (connect to peer)
s = socket.socket(); s.setblocking(False)
try: s.connect(("192.0.2.2", 80))
except BlockingIOError: pass
fr = drain()
out["tcp_syn"] = [f for f in fr if f[12:14]==b"\x08\x00" and f[23]==6][0]
s.close(); drain()
# 2. DNS query (UDP) from kernel
dnsq = bytes.fromhex("1a2b01000001000000000000076578616d706c6503636f6d0000010001")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("192.0.2.1", 53000))
u.sendto(dnsq, ("192.0.2.2", 53))
fr = drain(); out["udp_dns"] = [f for f in fr if f[12:14]==b"\x08\x00" and f[23]==17][0]
# 3. inject ICMP echo request from peer -> kernel echo reply
def csum(b):
    if len(b)%2: b+=b"\0"
    s=sum(struct.unpack("!%dH"%(len(b)//2), b)); 
    while s>>16: s=(s&0xffff)+(s>>16)
    return (~s)&0xffff
def ip4(src,dst,proto,payload,ident=0x1234,ttl=64):
    h=struct.pack("!BBHHHBBH4s4s",0x45,0,20+len(payload),ident,0x4000,ttl,proto,0,socket.inet_aton(src),socket.inet_aton(dst))
    h=h[:10]+struct.pack("!H",csum(h))+h[12:]
    return h+payload
def eth(payload, et=b"\x08\x00"): return bytes.fromhex("020000000001")+PEER_MAC+et+payload
icmp=struct.pack("!BBHHH",8,0,0,0x4242,1)+bytes(range(56))
icmp=icmp[:2]+struct.pack("!H",csum(icmp))+icmp[4:]
os.write(fd, eth(ip4("192.0.2.2","192.0.2.1",1,icmp)))
fr = drain(); out["icmp_echo_reply"] = [f for f in fr if f[12:14]==b"\x08\x00" and f[23]==1][0]
# 4. UDP to closed port -> ICMP port unreachable
udpp=struct.pack("!HHHH",40000,33434,8+12,0)+b"hello, world"
ps=socket.inet_aton("192.0.2.2")+socket.inet_aton("192.0.2.1")+struct.pack("!BBH",0,17,len(udpp))
c=csum(ps+udpp); udpp=udpp[:6]+struct.pack("!H",c)+udpp[8:]
os.write(fd, eth(ip4("192.0.2.2","192.0.2.1",17,udpp)))
fr = drain(); out["icmp_port_unreach"] = [f for f in fr if f[12:14]==b"\x08\x00" and f[23]==1][0]
# 5. ARP request from kernel (unknown neighbour)
u.sendto(b"x", ("192.0.2.77", 9))
fr = drain(1.2); out["arp_request"] = [f for f in fr if f[12:14]==b"\x08\x06"][0]
# 6. IPv6 NS from kernel
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.sendto(b"x", ("2001:db8::77", 9))
fr = drain(1.2); out["icmpv6_ns"] = [f for f in fr if f[12:14]==b"\x86\xdd" and f[20]==58 and f[54]==135][0]
# 7. IPv6 UDP with hop-by-hop (router alert) and fragmentation
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.bind(("2001:db8::1", 53001))
IPV6_HOPOPTS = 54; IPV6_MTU = 24
hbh = bytes([0, 0, 5, 2, 0, 0, 1, 0])  # router alert + PadN
u6.setsockopt(socket.IPPROTO_IPV6, IPV6_HOPOPTS, hbh)
u6.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU, 1280)
u6.connect(("2001:db8::2", 5353))
u6.send(bytes(i & 0xff for i in range(2000)))
fr = drain(); v6 = [f for f in fr if f[12:14]==b"\x86\xdd" and f[20]==0]
out["ipv6_hbh_frag1"] = v6[0]; out["ipv6_hbh_frag2"] = v6[1]
# 8. TCP SYN-ACK from kernel: listen, inject SYN
l = socket.socket(); l.bind(("192.0.2.1", 8080)); l.listen()
syn = out["tcp_syn"][34:]
tcp = struct.pack("!HHIIBBHHH",50000,8080,0x11223344,0,0xa0,0x02,64240,0,0)+syn[20:40]
ps=socket.inet_aton("192.0.2.2")+socket.inet_aton("192.0.2.1")+struct.pack("!BBH",0,6,len(tcp))
tcp=tcp[:16]+struct.pack("!H",csum(ps+tcp))+tcp[18:]
os.write(fd, eth(ip4("192.0.2.2","192.0.2.1",6,tcp)))
fr = drain(); out["tcp_synack"] = [f for f in fr if f[12:14]==b"\x08\x00" and f[23]==6][0]
# 9. ICMPv6 echo reply from kernel
def ip6(src,dst,nh,payload): return struct.pack("!IHBB",0x60000000,len(payload),nh,64)+socket.inet_pton(socket.AF_INET6,src)+socket.inet_pton(socket.AF_INET6,dst)+payload
e6=struct.pack("!BBHHH",128,0,0,0x77,1)+b"ping6 payload!!!"
ps6=socket.inet_pton(socket.AF_INET6,"2001:db8::2")+socket.inet_pton(socket.AF_INET6,"2001:db8::1")+struct.pack("!I3xB",len(e6),58)
e6=e6[:2]+struct.pack("!H",csum(ps6+e6))+e6[4:]
os.write(fd, eth(ip6("2001:db8::2","2001:db8::1",58,e6), b"\x86\xdd"))
fr = drain(); out["icmpv6_echo_reply"] = [f for f in fr if f[12:14]==b"\x86\xdd" and f[20]==58 and f[54]==129][0]
for k,v in out.items():
    print(k, v.hex())
